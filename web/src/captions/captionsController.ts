// Captions of one call: transcription on or off (for everyone), the languages this person
// speaks and reads (changed mid-call), the caption lines, and how this person's own words
// get transcribed: by the media node on the SFU; in P2P by the browser's speech recognition
// where it works, otherwise through an audio-only uplink to a media node
// (`call:captions-uplink`), the video staying peer-to-peer.

import { AppError, toAppError } from "../errors";
import type { CallMode, CaptionEvent, ParticipantView, SfuPublishAck, SfuRefView } from "../protocol";
import type { Signaling } from "../signaling";
import type { LocalMedia } from "../media/localMedia";
import { SfuUplink } from "../media/sfuUplink";
import { CaptionStore } from "./captionStore";
import { SpeechTranscriber, type Transcribed } from "./speechTranscriber";

export interface CaptionsHost {
  readonly callId: string;
  readonly selfId: string;
  participants(): readonly ParticipantView[];
  online(): boolean;
  iceServers(): RTCIceServer[];
  changed(): void;
  notice(message: string, tone: "info" | "error"): void;
  announce(message: string): void;
}

/** How this person's own words reach the transcribers now. */
export type OwnSource = "off" | "browser" | "uplink" | "media-server" | "unavailable";

export class CaptionsController {
  readonly store = new CaptionStore();
  enabled: boolean;
  source: OwnSource = "off";
  private mode: CallMode;
  private speech: SpeechTranscriber | null = null;
  private speechFailed = false;
  private uplink: { sessionId: string; leg: SfuUplink } | null = null;
  private uplinkPending = false;
  /** The uplink was refused: not asked again until something changes (no retry storm). */
  private uplinkFailed = false;
  private closed = false;

  constructor(
    private readonly host: CaptionsHost,
    private readonly signaling: Signaling,
    private readonly local: LocalMedia,
    enabled: boolean,
    mode: CallMode,
  ) {
    this.enabled = enabled;
    this.mode = mode;
    this.uplinkFailed = false;
    this.update();
  }

  private get me(): ParticipantView | undefined {
    return this.host.participants().find((p) => p.participantId === this.host.selfId);
  }

  get spokenLanguage(): string {
    return this.me?.language ?? "en";
  }

  get captionLanguage(): string {
    const me = this.me;
    return me ? me.captionLanguage || me.language : "en";
  }

  // --- server events ---------------------------------------------------------------------
  onTranscriptionChanged(enabled: boolean, by: string | null): void {
    const was = this.enabled;
    this.enabled = enabled;
    this.uplinkFailed = false;
    if (was !== enabled) {
      const who = by === this.host.selfId ? "You" : (this.host.participants().find((p) => p.participantId === by)?.displayName ?? "Someone");
      this.host.announce(`${who} turned ${enabled ? "on" : "off"} captions for the call`);
    }
    this.update();
    this.host.changed();
  }

  /** Back after a drop: the call's view says whether captions are on (a change may be lost). */
  reconcile(enabled: boolean): void {
    if (enabled === this.enabled) return;
    this.enabled = enabled;
    this.uplinkFailed = false;
    this.host.announce(`Captions were turned ${enabled ? "on" : "off"} for the call while you were away`);
    this.update();
    this.host.changed();
  }

    onCaption(ev: CaptionEvent): void {
    const names = (pid: string) => this.host.participants().find((p) => p.participantId === pid)?.displayName ?? "";
    const result = this.store.apply(ev, names, this.host.selfId);
    if (result.announce) this.host.announce(result.announce);
    if (result.changed) this.host.changed();
  }

  /** The call's path changed (captions of our words follow it). */
  modeChanged(mode: CallMode): void {
    if (mode === this.mode) return;
    this.mode = mode;
    this.uplinkFailed = false;
    this.update();
    this.host.changed();
  }

  /** Our microphone was muted or unmuted: muted words are never transcribed. */
  microphoneChanged(): void {
    this.update();
  }

  onLeg(sessionId: string, leg: string, state: string): void {
    if (this.uplink?.sessionId !== sessionId || leg !== "uplink") return;
    if (state === "failed") void this.reopenUplink();
  }

  onSessionClosed(sessionId: string): void {
    if (this.uplink?.sessionId !== sessionId) return;
    this.uplink.leg.close();
    this.uplink = null;
    this.update();
  }

  // --- actions ---------------------------------------------------------------------------
  async setTranscription(on: boolean): Promise<void> {
    try {
      await this.signaling.request("call:set-transcription", { callId: this.host.callId, enabled: on });
      this.enabled = on;
      this.update();
      this.host.changed();
    } catch (err) {
      this.host.notice(`Captions could not be turned ${on ? "on" : "off"}: ${toAppError(err).readable}`, "error");
    }
  }

  /** What I speak / what I read; takes effect at once. Returns the languages the server kept. */
  async setLanguage(change: { language?: string; captionLanguage?: string }): Promise<{ language: string; captionLanguage: string } | null> {
    try {
      const ack = await this.signaling.request<"call:set-language", { language: string; captionLanguage: string }>("call:set-language", {
        callId: this.host.callId,
        ...change,
      });
      if (ack.language) this.speech?.setLanguage(ack.language);
      return { language: ack.language, captionLanguage: ack.captionLanguage };
    } catch (err) {
      this.host.notice(`The language could not be changed: ${toAppError(err).readable}`, "error");
      return null;
    }
  }

  // --- our own words -----------------------------------------------------------------------
  private wanted(): OwnSource {
    if (!this.enabled) return "off";
    if (this.mode === "sfu") return "media-server";
    if (!this.local.audioTrack) return "unavailable";
    if (!this.speechFailed && SpeechTranscriber.available()) return "browser";
    return "uplink";
  }

  private update(): void {
    if (this.closed) return;
    const want = this.wanted();
    const muted = !this.local.audioEnabled;
    if (want !== "browser" || muted) {
      this.speech?.stop();
      if (want !== "browser") this.speech = null;
    }
    if (want !== "uplink") this.closeUplink();
    if (want === "browser" && !muted) {
      this.speech ??= new SpeechTranscriber(this.spokenLanguage, (t) => void this.send(t), (reason) => this.speechUnavailable(reason));
      this.speech.start();
    } else if (want === "uplink") {
      void this.openUplink();
    }
    this.source = want === "uplink" && this.uplinkFailed ? "unavailable" : want;
  }

  private speechUnavailable(reason: string): void {
    console.info(`speech recognition unavailable (${reason}); captions go through the media server`);
    this.speechFailed = true;
    this.speech = null;
    this.update();
    this.host.changed();
  }

  private async send(t: Transcribed): Promise<void> {
    if (!this.enabled || !this.local.audioEnabled || !this.host.online()) return;
    try {
      await this.signaling.request("call:transcription", { callId: this.host.callId, ...t });
    } catch (err) {
      const e = toAppError(err);
      if (e.code === "conflict" && this.enabled) {
        // The media node transcribes us already (our audio reaches it): the browser stops.
        this.speechFailed = true;
        this.speech?.stop();
        this.speech = null;
        this.update();
        this.host.changed();
      } else if (e.code !== "rate_limited") {
        console.warn("transcript not delivered", e.readable);
      }
    }
  }

  /** Ask for the audio-only uplink; the session comes in the ack or, later, as an event. */
  private async openUplink(): Promise<void> {
    if (this.uplink || this.uplinkPending || this.uplinkFailed || !this.host.online()) return;
    this.uplinkPending = true;
    try {
      const ack = await this.signaling.request<"call:captions-uplink", { sfu: SfuRefView | null }>("call:captions-uplink", {
        callId: this.host.callId,
        enabled: true,
      });
      if (ack.sfu) await this.publishUplink(ack.sfu);
    } catch (err) {
      const e = toAppError(err);
      // No node has taken it yet: the session comes as a call:captions-uplink event.
      if (e.code !== "unavailable" && e.code !== "timeout") this.uplinkRefused(e);
    } finally {
      this.uplinkPending = false;
    }
  }

  /** `call:captions-uplink` from the server: our captions session, or none any more. */
  onUplink(sfu: SfuRefView | null): void {
    if (!sfu) {
      this.closeUplink();
      this.host.changed();
      return;
    }
    if (this.wanted() === "uplink") void this.publishUplink(sfu);
  }

  private async publishUplink(sfu: SfuRefView): Promise<void> {
    if (this.closed || this.uplink?.sessionId === sfu.sessionId) return;
    this.closeUplink();
    const leg = new SfuUplink(this.host.iceServers(), this.local, ["audio"], true, () => undefined);
    this.uplink = { sessionId: sfu.sessionId, leg };
    try {
      await leg.negotiate(async (sdp) => {
        const answer = await this.signaling.request<"call:sfu-publish", SfuPublishAck>("call:sfu-publish", {
          callId: this.host.callId,
          sdp,
          purpose: "captions",
        });
        return answer.sdp;
      });
      console.info(`captions: microphone uplink on session ${sfu.sessionId}`);
    } catch (err) {
      if (this.uplink?.leg === leg) this.closeUplink();
      this.uplinkRefused(err instanceof AppError ? err : toAppError(err));
    }
  }

  private uplinkRefused(e: AppError): void {
    this.uplinkFailed = true;
    this.source = "unavailable";
    this.host.notice(`Your words cannot be captioned: ${e.readable}`, "error");
    this.host.changed();
  }

  private async reopenUplink(): Promise<void> {
    const sessionId = this.uplink?.sessionId;
    this.closeUplink();
    if (sessionId) await this.publishUplink({ nodeId: "", sessionId });
  }

  private closeUplink(): void {
    this.uplink?.leg.close();
    this.uplink = null;
  }

  close(): void {
    this.closed = true;
    this.speech?.stop();
    this.speech = null;
    this.closeUplink();
  }
}
