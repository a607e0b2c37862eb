// One RTCPeerConnection to one other participant (P2P). Perfect negotiation: the participant
// who was in the call first offers and is "impolite"; the newcomer answers and yields on a
// collision. ICE restarts go out as `ice-restart` offers.

import type { SignalMessage, SignalType } from "../protocol";
import type { LocalMedia, TrackKind } from "./localMedia";

export type SendSignal = (
  type: SignalType,
  body: { sdp?: string; candidate?: RTCIceCandidateInit },
) => Promise<void>;

export interface PeerLinkEvents {
  onRemoteStream(stream: MediaStream): void;
  onState(state: RTCIceConnectionState): void;
  onError(err: unknown): void;
}

export class PeerLink {
  readonly pc: RTCPeerConnection;
  readonly remoteStream = new MediaStream();
  /** When this link was made (performance.now()): a link that never carries media is reported. */
  readonly createdAt = performance.now();
  private makingOffer = false;
  private ignoreOffer = false;
  private restartPending = false;
  private pendingCandidates: RTCIceCandidateInit[] = [];
  private tracksAttached = false;
  private closed = false;

  constructor(
    readonly remoteId: string,
    /** The newcomer side: answers, and rolls back its own offer on a collision. */
    readonly polite: boolean,
    iceServers: RTCIceServer[],
    private readonly local: LocalMedia,
    private readonly send: SendSignal,
    private readonly events: PeerLinkEvents,
  ) {
    this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.pc.addEventListener("track", (ev) => {
      if (!this.remoteStream.getTracks().includes(ev.track)) this.remoteStream.addTrack(ev.track);
      ev.track.addEventListener("unmute", () => this.events.onRemoteStream(this.remoteStream));
      this.events.onRemoteStream(this.remoteStream);
    });
    this.pc.addEventListener("icecandidate", (ev) => {
      if (!ev.candidate) return;
      this.send("ice-candidate", { candidate: ev.candidate.toJSON() }).catch((err) => this.fail(err));
    });
    this.pc.addEventListener("iceconnectionstatechange", () => this.events.onState(this.pc.iceConnectionState));
    this.pc.addEventListener("negotiationneeded", () => void this.negotiate());
    if (!polite) this.attachTracks();
  }

  /** Our tracks on the connection (the offerer adds them first; the answerer after the offer). */
  private attachTracks(): void {
    if (this.tracksAttached) return;
    this.tracksAttached = true;
    const audio = this.local.audioTrack;
    const video = this.local.outgoingVideo;
    if (audio) this.pc.addTrack(audio, this.local.stream);
    else if (!this.polite) this.pc.addTransceiver("audio", { direction: "recvonly" });
    if (video) this.pc.addTrack(video, this.local.stream);
    else if (!this.polite) this.pc.addTransceiver("video", { direction: "recvonly" });
  }

  private async negotiate(): Promise<void> {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      const restart = this.restartPending;
      this.restartPending = false;
      await this.pc.setLocalDescription();
      const sdp = this.pc.localDescription?.sdp;
      if (sdp) await this.send(restart ? "ice-restart" : "offer", { sdp });
    } catch (err) {
      this.fail(err);
    } finally {
      this.makingOffer = false;
    }
  }

  async handleSignal(msg: SignalMessage): Promise<void> {
    if (this.closed) return;
    try {
      if (msg.type === "offer" || msg.type === "ice-restart") {
        if (!msg.sdp) return;
        const collision = this.makingOffer || this.pc.signalingState !== "stable";
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        await this.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
        this.attachTracks();
        await this.flushCandidates();
        await this.pc.setLocalDescription();
        const sdp = this.pc.localDescription?.sdp;
        if (sdp) await this.send("answer", { sdp });
      } else if (msg.type === "answer") {
        if (!msg.sdp || this.pc.signalingState !== "have-local-offer") return;
        await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        await this.flushCandidates();
      } else if (msg.type === "ice-candidate" && msg.candidate) {
        if (!this.pc.remoteDescription) {
          this.pendingCandidates.push(msg.candidate);
          return;
        }
        try {
          await this.pc.addIceCandidate(msg.candidate);
        } catch (err) {
          if (!this.ignoreOffer) throw err;
        }
      }
    } catch (err) {
      this.fail(err);
    }
  }

  private async flushCandidates(): Promise<void> {
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const c of pending) {
      try {
        await this.pc.addIceCandidate(c);
      } catch {
        // A candidate of a previous ICE generation: harmless.
      }
    }
  }

  /** New ICE credentials and candidates (after a network change); media keeps its tracks. */
  restartIce(): void {
    if (this.closed) return;
    console.info(`media: ICE restart toward ${this.remoteId} (ICE ${this.pc.iceConnectionState})`);
    this.restartPending = true;
    this.pc.restartIce();
  }

  /** Send another track of the same kind (device switch, screen share) without renegotiating. */
  async replaceTrack(kind: TrackKind, track: MediaStreamTrack | null): Promise<void> {
    for (const sender of this.pc.getSenders()) {
      if (sender.track?.kind === kind || (sender.track === null && this.senderKind(sender) === kind)) {
        await sender.replaceTrack(track);
      }
    }
  }

  private senderKind(sender: RTCRtpSender): string | undefined {
    return this.pc.getTransceivers().find((t) => t.sender === sender)?.receiver.track.kind;
  }

  get remoteVideo(): MediaStreamTrack | null {
    return this.remoteStream.getVideoTracks()[0] ?? null;
  }

  get remoteAudio(): MediaStreamTrack | null {
    return this.remoteStream.getAudioTracks()[0] ?? null;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private fail(err: unknown): void {
    if (!this.closed) this.events.onError(err);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
  }
}
