// One call in progress: server events in, P2P media, heartbeats, and coming back after a
// network drop (socket resume with the resume token, then ICE restarts) without leaving the
// call screen. The UI reads the state and re-renders on `changed`.

import type { Identity } from "../auth";
import { AppError, toAppError } from "../errors";
import type { JoinedAck, ParticipantView, ServerEvents, SignalType } from "../protocol";
import type { Signaling } from "../signaling";
import { CaptionStore } from "../captions/captionStore";
import type { LocalMedia } from "../media/localMedia";
import { LevelMeter } from "../media/levelMeter";
import type { MediaPath } from "../media/mediaPath";
import { P2PMesh } from "../media/p2pMesh";
import type { LinkStats } from "../media/stats";
import * as model from "./callModel";

export interface RemoteMedia {
  stream: MediaStream | null;
  ice: RTCIceConnectionState | "new";
  stats: LinkStats | null;
}

export interface CallSessionListener {
  changed(): void;
  /** The call is over for this person; `message` says why, in words. */
  ended(message: string, tone: "info" | "error"): void;
  notice(message: string, tone: "info" | "error"): void;
  announce(message: string): void;
}

const STATS_EVERY_MS = 1_000;
const SPEAKING_LEVEL = 0.02;
const LOCAL_SPEAKING_LEVEL = 0.08;
const RESUME_RETRY_MS = 1_500;
const SPEAKER_HOLD_MS = 1_500;
/** How long a heartbeat's "call ended" waits for the call:ended notice that says why. */
const END_NOTICE_WAIT_MS = 3_000;

export class CallSession {
  state: model.CallModel;
  /** This socket's own link to the server: "reconnecting" during a network drop. */
  selfConnection: "connected" | "reconnecting" = "connected";
  readonly remote = new Map<string, RemoteMedia>();
  activeSpeaker: string | null = null;
  readonly captions = new CaptionStore();
  private resumeToken: string;
  private readonly path: MediaPath;
  private readonly offs: (() => void)[] = [];
  private heartbeatTimer: number | null = null;
  private statsTimer: number | null = null;
  private endTimer: number | null = null;
  private meter: LevelMeter | null = null;
  private localLevel = 0;
  private spokeAt = 0;
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
  ) {
    this.state = model.fromView(joined.call, joined.participantId);
    this.resumeToken = joined.resumeToken;
    const iceServers: RTCIceServer[] = joined.iceServers.map((s) => ({
      urls: s.urls,
      ...(s.username ? { username: s.username } : {}),
      ...(s.credential ? { credential: s.credential } : {}),
    }));
    this.path = new P2PMesh(
      local,
      iceServers,
      (to, type, body) => this.sendSignal(to, type, body),
      () => this.signaling.connected && this.selfConnection === "connected",
      {
        onRemoteStream: (pid, stream) => {
          this.remoteOf(pid).stream = stream;
          this.listener.changed();
        },
        onLinkState: (pid, ice) => {
          this.remoteOf(pid).ice = ice;
          this.listener.changed();
        },
        onError: (pid, err) => {
          const name = model.find(this.state, pid)?.displayName ?? "someone";
          console.warn("media link error", pid, err);
          this.listener.notice(`Media with ${name}: ${toAppError(err).readable}`, "error");
        },
      },
    );
    this.subscribe();
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

  get mode(): string {
    return this.path.mode;
  }

  get mayEndForAll(): boolean {
    return model.mayEndForAll(this.state, this.identity.kind === "user" ? this.identity.principalId : null, this.role);
  }

  private remoteOf(pid: string): RemoteMedia {
    let r = this.remote.get(pid);
    if (!r) {
      r = { stream: null, ice: "new", stats: null };
      this.remote.set(pid, r);
    }
    return r;
  }

  private async sendSignal(
    to: string,
    type: SignalType,
    body: { sdp?: string; candidate?: RTCIceCandidateInit },
  ): Promise<void> {
    await this.signaling.request("call:signal", { callId: this.callId, to, type, ...body });
  }

  private on<E extends keyof ServerEvents>(event: E, handler: (p: ServerEvents[E]) => void): void {
    this.offs.push(
      this.signaling.on(event, (payload) => {
        if (this.over) return;
        if ((payload as { callId?: string }).callId !== this.callId) return;
        handler(payload);
      }),
    );
  }

  private subscribe(): void {
    this.on("call:participant-joined", ({ participant }) => {
      const isNew = !model.find(this.state, participant.participantId);
      this.state = model.upsert(this.state, participant);
      if (participant.participantId !== this.state.selfId) {
        // Those already in the call offer to the newcomer.
        this.path.connect(participant.participantId);
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
        this.finish(reason === "removed" ? "You were removed from the call." : "You left the call.", "info");
        return;
      }
      const who = model.find(this.state, participantId);
      this.state = model.remove(this.state, participantId);
      this.path.disconnect(participantId);
      this.remote.delete(participantId);
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
    this.on("call:signal", (msg) => this.path.handleSignal(msg));
    this.on("call:ended", ({ reason, endedBy }) => {
      this.finish(model.endReasonText(reason, endedBy === this.state.selfId), "info");
    });
    this.on("call:caption", (caption) => {
      const names = (pid: string) => model.find(this.state, pid)?.displayName ?? "";
      const result = this.captions.apply(caption, names, this.state.selfId);
      if (result.announce) this.listener.announce(result.announce);
      if (result.changed) this.listener.changed();
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
      const { model: next, added, removed } = model.reconcile(this.state, ack.call);
      this.state = next;
      for (const pid of removed) {
        this.path.disconnect(pid);
        this.remote.delete(pid);
      }
      // Whoever arrived while we were away expects an offer from those already in.
      for (const pid of added) this.path.connect(pid);
      for (const p of model.others(this.state)) if (!this.path.has(p.participantId)) this.path.connect(p.participantId);
      this.selfConnection = "connected";
      this.path.restartUnhealthy();
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
    this.statsTimer = window.setInterval(() => void this.sampleStats(), STATS_EVERY_MS);
  }

  private async sampleStats(): Promise<void> {
    let loudest: string | null = null;
    let level = SPEAKING_LEVEL;
    for (const p of model.others(this.state)) {
      try {
        const s = await this.path.stats(p.participantId);
        if (!s) continue;
        this.remoteOf(p.participantId).stats = s;
        if (p.audioEnabled && s.audioLevel > level) {
          level = s.audioLevel;
          loudest = p.participantId;
        }
      } catch {
        // A link closing under us: the next sample will not see it.
      }
    }
    this.localLevel = this.meter && this.local.audioEnabled ? this.meter.level() : 0;
    if (!loudest && this.localLevel > LOCAL_SPEAKING_LEVEL) loudest = this.state.selfId;
    const now = performance.now();
    if (loudest) {
      this.activeSpeaker = loudest;
      this.spokeAt = now;
    } else if (this.activeSpeaker !== null) {
      // Keep the highlight through short pauses; drop it after a silence or a mute.
      const current = model.find(this.state, this.activeSpeaker);
      const muted = this.activeSpeaker === this.state.selfId ? !this.local.audioEnabled : !current?.audioEnabled;
      if (muted || now - this.spokeAt > SPEAKER_HOLD_MS) this.activeSpeaker = null;
    }
    this.listener.changed();
  }

  // --- actions -------------------------------------------------------------------------
  async setAudio(on: boolean): Promise<void> {
    this.local.setAudioEnabled(on);
    this.state = model.patch(this.state, this.state.selfId, { audioEnabled: on });
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
    if (this.statsTimer !== null) window.clearInterval(this.statsTimer);
    if (this.endTimer !== null) window.clearTimeout(this.endTimer);
    this.meter?.close();
    this.path.close();
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
