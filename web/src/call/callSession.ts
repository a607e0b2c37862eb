// One call in progress: the server's events in, the media (CallMedia: P2P, SFU, migrations),
// captions (CaptionsController), heartbeats, and coming back after a network drop (socket
// resume with the resume token, then ICE restarts) without leaving the call screen. The UI
// reads the state and re-renders on `changed`.

import type { Identity } from "../auth";
import { CaptionsController } from "../captions/captionsController";
import { AppError, toAppError } from "../errors";
import { CallMedia, type RemoteTile } from "../media/callMedia";
import { toRtcIceServers } from "../media/ice";
import { LevelMeter } from "../media/levelMeter";
import type { LocalMedia } from "../media/localMedia";
import type { CallMode, JoinedAck, ParticipantView, ServerEvents } from "../protocol";
import type { EarlyEvent, Signaling } from "../signaling";
import * as model from "./callModel";

export interface CallSessionListener {
  changed(): void;
  /** The call is over for this person; `message` says why, in words. */
  ended(message: string, tone: "info" | "error"): void;
  notice(message: string, tone: "info" | "error"): void;
  announce(message: string): void;
}

const SPEAKING_LEVEL = 0.02;
const LOCAL_SPEAKING_LEVEL = 0.08;
const RESUME_RETRY_MS = 1_500;
const SPEAKER_HOLD_MS = 1_500;
const SPEAKER_EVERY_MS = 500;
/** How long a heartbeat's "call ended" waits for the call:ended notice that says why. */
const END_NOTICE_WAIT_MS = 3_000;

type Handlers = { [E in keyof ServerEvents]?: (payload: ServerEvents[E]) => void };

export class CallSession {
  state: model.CallModel;
  /** This socket's own link to the server: "reconnecting" during a network drop. */
  selfConnection: "connected" | "reconnecting" = "connected";
  activeSpeaker: string | null = null;
  readonly media: CallMedia;
  readonly captions: CaptionsController;
  private resumeToken: string;
  private iceServers: RTCIceServer[];
  private readonly handlers: Handlers = {};
  private readonly offs: (() => void)[] = [];
  private heartbeatTimer: number | null = null;
  private speakerTimer: number | null = null;
  private endTimer: number | null = null;
  private meter: LevelMeter | null = null;
  private spokeAt = 0;
  private serverSpeaker: string | null = null;
  private over = false;
  private resuming = false;

  constructor(
    private readonly signaling: Signaling,
    readonly local: LocalMedia,
    readonly identity: Identity,
    joined: JoinedAck,
    private readonly listener: CallSessionListener,
    /** The person's role in the conversation (null for guests). */
    readonly role: string | null,
    /** Events of this call that arrived before the join's ack. */
    early: readonly EarlyEvent[] = [],
  ) {
    this.state = model.fromView(joined.call, joined.participantId);
    this.resumeToken = joined.resumeToken;
    this.iceServers = toRtcIceServers(joined.iceServers);
    const online = () => this.signaling.connected && this.selfConnection === "connected" && !this.over;
    this.media = new CallMedia(
      {
        callId: this.state.callId,
        selfId: this.state.selfId,
        conversationType: this.state.conversationType,
        participants: () => this.state.participants,
        online,
        changed: () => this.listener.changed(),
        notice: (m, tone) => this.listener.notice(m, tone),
      },
      signaling,
      local,
      this.iceServers,
      joined.call,
    );
    this.captions = new CaptionsController(
      {
        callId: this.state.callId,
        selfId: this.state.selfId,
        participants: () => this.state.participants,
        online,
        iceServers: () => this.iceServers,
        changed: () => this.listener.changed(),
        notice: (m, tone) => this.listener.notice(m, tone),
        announce: (m) => this.listener.announce(m),
      },
      signaling,
      local,
      this.state.transcription,
      this.media.primary,
    );
    this.subscribe();
    for (const e of early) this.dispatch(e.event, e.payload);
    this.startTimers(joined.heartbeatIntervalS);
    if (local.audioTrack) {
      try {
        this.meter = new LevelMeter(local.audioTrack);
      } catch {
        this.meter = null;
      }
    }
  }

  get callId(): string {
    return this.state.callId;
  }

  get self(): ParticipantView | undefined {
    return model.find(this.state, this.state.selfId);
  }

  get mode(): CallMode {
    return this.media.primary;
  }

  get mayEndForAll(): boolean {
    return model.mayEndForAll(this.state, this.identity.kind === "user" ? this.identity.principalId : null, this.role);
  }

  remote(participantId: string): RemoteTile {
    return this.media.tile(participantId);
  }

  // --- server events -----------------------------------------------------------------------
  private on<E extends keyof ServerEvents>(event: E, handler: (p: ServerEvents[E]) => void): void {
    (this.handlers as Record<string, (p: unknown) => void>)[event] = handler as (p: unknown) => void;
    this.offs.push(this.signaling.on(event, (payload) => this.dispatch(event, payload)));
  }

  private dispatch(event: string, payload: unknown): void {
    if (this.over) return;
    if ((payload as { callId?: string } | null)?.callId !== this.callId) return;
    const handler = (this.handlers as Record<string, ((p: unknown) => void) | undefined>)[event];
    if (!handler) return;
    try {
      handler(payload);
    } catch (err) {
      console.error(`handling ${event} failed`, err);
    }
  }

  private subscribe(): void {
    this.on("call:participant-joined", ({ participant, activeCount }) => {
      const isNew = !model.find(this.state, participant.participantId);
      this.state = model.upsert(this.state, participant);
      if (participant.participantId !== this.state.selfId) {
        this.media.participantJoined(participant.participantId, activeCount);
        if (isNew) this.listener.announce(`${participant.displayName} joined the call`);
      }
      this.listener.changed();
    });
    this.on("call:accepted", ({ callee }) => {
      this.state = { ...this.state, status: "active" };
      this.listener.notice(`${callee.displayName || callee.userId} accepted the call`, "info");
      this.listener.changed();
    });
    this.on("call:declined", ({ userId }) => {
      this.listener.notice(`${userId} declined the call`, "info");
    });
    this.on("call:participant-left", ({ participantId, reason }) => {
      if (participantId === this.state.selfId) {
        // The call ending: call:ended (on its way) says why; otherwise say why we are out.
        if (reason === "call_ended") this.finishUnlessTold(model.selfLeaveText(reason));
        else this.finish(model.selfLeaveText(reason), ["left", "removed", "declined"].includes(reason) ? "info" : "error");
        return;
      }
      const who = model.find(this.state, participantId);
      this.state = model.remove(this.state, participantId);
      this.media.participantLeft(participantId);
      if (this.activeSpeaker === participantId) this.activeSpeaker = null;
      if (who) this.listener.announce(`${who.displayName} ${model.leaveReasonText(reason)}`);
      this.listener.changed();
    });
    this.on("call:participant-disconnected", ({ participantId }) => {
      this.state = model.patch(this.state, participantId, { connection: "reconnecting" });
      this.listener.changed();
    });
    this.on("call:participant-resumed", ({ participantId, participant }) => {
      // Back with what they had: fields the notice leaves out (an older server says nothing
      // of media) keep what we knew, never the "just joined" defaults.
      const known = model.find(this.state, participantId);
      this.state = known
        ? model.upsert(this.state, { ...known, ...(participant ?? {}), participantId, connection: "connected" })
        : participant && isFullView(participant)
          ? model.upsert(this.state, participant)
          : this.state;
      this.listener.changed();
    });
    this.on("call:media-toggled", ({ participantId, audioEnabled, videoEnabled }) => {
      this.state = model.patch(this.state, participantId, { audioEnabled, videoEnabled });
      this.listener.changed();
    });
    this.on("call:active-speaker", ({ participantId }) => {
      this.serverSpeaker = participantId;
    });
    this.on("call:signal", (msg) => this.media.handleSignal(msg));
    this.on("call:ended", ({ reason, endedBy }) => {
      this.finish(model.endReasonText(reason, endedBy === this.state.selfId), "info");
    });
    // --- SFU and migrations
    this.on("call:migration-started", (ev) => this.media.onMigrationStarted(ev));
    this.on("call:mode-switch", (ev) => void this.media.onModeSwitch(ev));
    this.on("call:mode-changed", (ev) => {
      this.media.onModeChanged(ev);
      this.state = { ...this.state, mode: this.media.primary };
      this.captions.modeChanged(this.media.primary);
      if (ev.outcome !== "completed" && ev.reason && ev.reason !== "superseded") {
        console.info(`migration to ${ev.toMode} ${ev.outcome}: ${ev.reason}`);
      }
      this.listener.changed();
    });
    this.on("call:sfu-prewarm", (ev) => this.media.onPrewarm(ev));
    this.on("call:slots", (ev) => this.media.onSlots(ev));
    this.on("call:video-demand", (ev) => this.media.onVideoDemand(ev));
    this.on("call:sfu-leg", (ev) => {
      this.media.onSfuLeg(ev);
      this.captions.onLeg(ev.sessionId, ev.leg, ev.state);
    });
    this.on("call:sfu-closed", (ev) => {
      this.media.onSfuClosed(ev);
      this.captions.onSessionClosed(ev.sessionId);
    });
    // --- captions
    this.on("call:transcription-changed", ({ enabled, by }) => {
      this.state = { ...this.state, transcription: enabled };
      this.captions.onTranscriptionChanged(enabled, by);
    });
    this.on("call:participant-language", ({ participantId, language, captionLanguage }) => {
      this.state = model.patch(this.state, participantId, { language, captionLanguage });
      this.listener.changed();
    });
    this.on("call:caption", (caption) => this.captions.onCaption(caption));
    this.on("call:captions-uplink", ({ participantId, sfu }) => {
      if (participantId === this.state.selfId) this.captions.onUplink(sfu);
    });
    this.offs.push(
      this.signaling.onState((s, err) => {
        if (this.over) return;
        if (s === "reconnecting" || s === "connecting") {
          if (this.selfConnection !== "reconnecting") {
            this.selfConnection = "reconnecting";
            this.listener.changed();
          }
        } else if (s === "connected" && this.selfConnection === "reconnecting") {
          void this.resume();
        } else if (s === "closed" && err) {
          this.finish(err.readable, "error");
        }
      }),
    );
  }

  /** Back on the server after a drop: take our place again, then repair media. */
  private async resume(): Promise<void> {
    if (this.resuming || this.over) return;
    this.resuming = true;
    try {
      const ack = await this.signaling.request<"call:join", JoinedAck>("call:join", {
        callId: this.callId,
        resumeToken: this.resumeToken,
      });
      this.resumeToken = ack.resumeToken;
      if (ack.iceServers.length) this.iceServers = toRtcIceServers(ack.iceServers);
      const { model: next, added, removed } = model.reconcile(this.state, ack.call);
      this.state = next;
      for (const pid of removed) this.media.participantLeft(pid);
      this.selfConnection = "connected";
      // A migration or a captions switch may have ended while we were away (its event lost):
      // the view says where the call is now.
      this.media.reconcile(ack.call);
      this.state = { ...this.state, mode: this.media.primary };
      this.captions.modeChanged(this.media.primary);
      this.captions.reconcile(this.state.transcription);
      // Whoever arrived while we were away expects an offer from those already in.
      this.media.resumed(added);
      // The server keeps media states across a resume; re-assert ours in case a toggle was lost.
      await this.syncMediaState();
      this.listener.notice("Reconnected.", "info");
      this.listener.changed();
    } catch (err) {
      const e = toAppError(err);
      if (["call_ended", "forbidden", "not_found", "not_in_call"].includes(e.code)) {
        this.finish(`You were disconnected for too long and are no longer in the call (${e.reason || e.code}).`, "error");
      } else if (!this.over) {
        window.setTimeout(() => {
          if (this.signaling.connected && this.selfConnection === "reconnecting") void this.resume();
        }, RESUME_RETRY_MS);
      }
    } finally {
      this.resuming = false;
    }
  }

  private async syncMediaState(): Promise<void> {
    const me = this.self;
    if (!me) return;
    if (me.audioEnabled !== this.local.audioEnabled) {
      await this.signaling.request("call:toggle-audio", { callId: this.callId, enabled: this.local.audioEnabled });
      this.state = model.patch(this.state, me.participantId, { audioEnabled: this.local.audioEnabled });
    }
    if (me.videoEnabled !== this.local.videoEnabled) {
      await this.signaling.request("call:toggle-video", { callId: this.callId, enabled: this.local.videoEnabled });
      this.state = model.patch(this.state, me.participantId, { videoEnabled: this.local.videoEnabled });
    }
  }

  private startTimers(heartbeatIntervalS: number): void {
    const every = Math.max(500, heartbeatIntervalS * 1000);
    this.heartbeatTimer = window.setInterval(() => {
      if (!this.signaling.connected || this.selfConnection !== "connected") return;
      this.signaling.request("call:heartbeat", { callId: this.callId }).catch((err: unknown) => {
        const e = toAppError(err);
        if (e.code === "call_ended" || e.code === "not_in_call") {
          // The heartbeat can learn of the end before call:ended (with its reason) arrives:
          // give the notice a moment, so the person reads why ("No answer", ...).
          this.finishUnlessTold("You are no longer in this call.");
        }
      });
    }, every);
    this.speakerTimer = window.setInterval(() => this.updateSpeaker(), SPEAKER_EVERY_MS);
  }

  /** The highlighted tile: the loudest remote audio, or our own voice, or the server's pick. */
  private updateSpeaker(): void {
    let loudest: string | null = null;
    let level = SPEAKING_LEVEL;
    for (const p of model.others(this.state)) {
      const s = this.media.tile(p.participantId).stats;
      if (s && p.audioEnabled && s.audioLevel > level) {
        level = s.audioLevel;
        loudest = p.participantId;
      }
    }
    const localLevel = this.meter && this.local.audioEnabled ? this.meter.level() : 0;
    if (!loudest && localLevel > LOCAL_SPEAKING_LEVEL) loudest = this.state.selfId;
    if (!loudest && this.serverSpeaker && model.find(this.state, this.serverSpeaker)) loudest = this.serverSpeaker;
    const now = performance.now();
    const before = this.activeSpeaker;
    if (loudest) {
      this.activeSpeaker = loudest;
      this.spokeAt = now;
    } else if (this.activeSpeaker !== null) {
      // Keep the highlight through short pauses; drop it after a silence or a mute.
      const current = model.find(this.state, this.activeSpeaker);
      const muted = this.activeSpeaker === this.state.selfId ? !this.local.audioEnabled : !current?.audioEnabled;
      if (muted || now - this.spokeAt > SPEAKER_HOLD_MS) this.activeSpeaker = null;
    }
    if (before !== this.activeSpeaker) this.listener.changed();
  }

  // --- actions -------------------------------------------------------------------------
  async setAudio(on: boolean): Promise<void> {
    this.local.setAudioEnabled(on);
    this.state = model.patch(this.state, this.state.selfId, { audioEnabled: on });
    this.captions.microphoneChanged();
    this.listener.changed();
    try {
      await this.signaling.request("call:toggle-audio", { callId: this.callId, enabled: on });
    } catch (err) {
      // The track is muted locally either way; the others learn it once we are back.
      if (this.selfConnection === "connected") this.listener.notice(toAppError(err).readable, "error");
    }
  }

  async setVideo(on: boolean): Promise<void> {
    this.local.setVideoEnabled(on);
    this.state = model.patch(this.state, this.state.selfId, { videoEnabled: on });
    this.listener.changed();
    try {
      await this.signaling.request("call:toggle-video", { callId: this.callId, enabled: on });
    } catch (err) {
      if (this.selfConnection === "connected") this.listener.notice(toAppError(err).readable, "error");
    }
  }

  async toggleScreenShare(): Promise<void> {
    try {
      if (this.local.sharing) this.local.stopScreenShare();
      else await this.local.startScreenShare();
    } catch (err) {
      this.listener.notice(toAppError(err).readable, "error");
    }
    this.listener.changed();
  }

  togglePin(participantId: string): void {
    const pins = this.media.pins;
    this.media.setPinned(pins.includes(participantId) ? pins.filter((p) => p !== participantId) : [...pins, participantId]);
  }

  async setLanguages(change: { language?: string; captionLanguage?: string }): Promise<void> {
    const kept = await this.captions.setLanguage(change);
    if (kept) {
      this.state = model.patch(this.state, this.state.selfId, kept);
      this.listener.changed();
    }
  }

  async leave(): Promise<void> {
    try {
      await this.signaling.request("call:leave", { callId: this.callId });
      this.finish("You left the call.", "info");
    } catch (err) {
      const e = toAppError(err);
      this.finish(
        e.code === "network" || e.code === "timeout"
          ? "You left the call (the server was unreachable; the others will see you leave shortly)."
          : "You left the call.",
        "info",
      );
    }
  }

  async endForAll(): Promise<void> {
    try {
      await this.signaling.request("call:end", { callId: this.callId });
      this.finish("You ended the call for everyone.", "info");
    } catch (err) {
      this.listener.notice(toAppError(err).readable, "error");
    }
  }

  private finishUnlessTold(message: string): void {
    if (this.over || this.endTimer !== null) return;
    this.endTimer = window.setTimeout(() => this.finish(message, "info"), END_NOTICE_WAIT_MS);
  }

  private finish(message: string, tone: "info" | "error"): void {
    if (this.over) return;
    this.dispose();
    this.listener.ended(message, tone);
  }

  dispose(): void {
    if (this.over) return;
    this.over = true;
    for (const off of this.offs) off();
    this.offs.length = 0;
    if (this.heartbeatTimer !== null) window.clearInterval(this.heartbeatTimer);
    if (this.speakerTimer !== null) window.clearInterval(this.speakerTimer);
    if (this.endTimer !== null) window.clearTimeout(this.endTimer);
    this.meter?.close();
    this.captions.close();
    this.media.close();
    this.local.stop();
  }
}

function isFullView(p: Partial<ParticipantView>): p is ParticipantView {
  return typeof p.participantId === "string" && typeof p.audioEnabled === "boolean" && typeof p.videoEnabled === "boolean";
}

export function requireJoined(ack: unknown): JoinedAck {
  const a = ack as Partial<JoinedAck>;
  if (!a || !a.call || !a.participantId || !a.resumeToken) {
    throw new AppError("internal", "the server's answer to joining was incomplete");
  }
  return a as JoinedAck;
}
