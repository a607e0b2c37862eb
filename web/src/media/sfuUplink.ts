// The uplink of an SFU session: one sendonly peer connection carrying this person's own
// microphone and camera (the same tracks as every other path) to the media node. The client
// offers, the node answers (through the gateway: `call:sfu-publish`). Without `sending` the
// senders carry no track (a pre-warmed session: connected, silent); video demand
// (`call:video-demand`) takes the camera off the wire while nobody shows it.

import type { LocalMedia, TrackKind } from "./localMedia";
import { gathered } from "./ice";

export type PublishOffer = (sdp: string) => Promise<string>;

export class SfuUplink {
  readonly pc: RTCPeerConnection;
  private readonly senders = new Map<TrackKind, RTCRtpSender>();
  private sending: boolean;
  private videoWanted = true;
  private readonly offTracks: () => void;
  private closed = false;

  constructor(
    iceServers: RTCIceServer[],
    private readonly local: LocalMedia,
    readonly kinds: readonly TrackKind[],
    sending: boolean,
    onState: (state: RTCPeerConnectionState) => void,
  ) {
    this.sending = sending;
    this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.pc.addEventListener("connectionstatechange", () => onState(this.pc.connectionState));
    for (const kind of kinds) {
      const track = this.wanted(kind);
      const transceiver = this.pc.addTransceiver(track ?? kind, { direction: "sendonly", streams: [local.stream] });
      this.senders.set(kind, transceiver.sender);
    }
    this.offTracks = local.onTrackChange((kind) => void this.refresh(kind));
  }

  /** What a sender of `kind` should carry now. */
  private wanted(kind: TrackKind): MediaStreamTrack | null {
    if (!this.sending) return null;
    if (kind === "audio") return this.local.audioTrack;
    return this.videoWanted ? this.local.outgoingVideo : null;
  }

  private async refresh(kind: TrackKind): Promise<void> {
    const sender = this.senders.get(kind);
    if (!sender || this.closed) return;
    const track = this.wanted(kind);
    if (sender.track !== track) await sender.replaceTrack(track);
  }

  /** Offer, have the node answer, apply the answer. */
  async negotiate(publish: PublishOffer): Promise<void> {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await gathered(this.pc);
    const sdp = this.pc.localDescription?.sdp;
    if (!sdp) throw new Error("no local description for the uplink");
    const answer = await publish(sdp);
    if (this.closed) return;
    await this.pc.setRemoteDescription({ type: "answer", sdp: answer });
  }

  /** Put the tracks on (a pre-warmed session going live) or take them off (back to idle). */
  async setSending(on: boolean): Promise<void> {
    this.sending = on;
    await Promise.all(this.kinds.map((k) => this.refresh(k)));
  }

  get isSending(): boolean {
    return this.sending;
  }

  /** `call:video-demand`: nobody shows our video (false), or someone does again (true). */
  async setVideoDemand(send: boolean): Promise<void> {
    this.videoWanted = send;
    await this.refresh("video");
  }

  get videoSent(): boolean {
    return this.senders.get("video")?.track != null;
  }

  async stats(): Promise<RTCStatsReport> {
    return this.pc.getStats();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.offTracks();
    this.pc.close();
  }
}
