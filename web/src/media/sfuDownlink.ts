// The downlink of an SFU session: the node offers one sendonly m-line per slot
// (`call:sfu-downlink`), this client answers (`call:sfu-downlink-answer`). Each m-line's
// receiver track is the slot's media; who it carries comes from the slot map.

import type { SfuDownlinkAck } from "../protocol";
import { gathered } from "./ice";

export class SfuDownlink {
  readonly pc: RTCPeerConnection;
  /** mid → the receiving track of that slot. */
  readonly tracks = new Map<string, MediaStreamTrack>();
  private closed = false;

  constructor(iceServers: RTCIceServer[], onState: (state: RTCPeerConnectionState) => void) {
    this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.pc.addEventListener("connectionstatechange", () => onState(this.pc.connectionState));
  }

  /** Take the node's offer, answer it; returns the offer's slot table. */
  async open(offer: () => Promise<SfuDownlinkAck>, answer: (sdp: string) => Promise<void>): Promise<SfuDownlinkAck> {
    const ack = await offer();
    if (this.closed) return ack;
    await this.pc.setRemoteDescription({ type: "offer", sdp: ack.sdp });
    for (const t of this.pc.getTransceivers()) {
      if (t.mid !== null) this.tracks.set(t.mid, t.receiver.track);
    }
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await gathered(this.pc);
    const sdp = this.pc.localDescription?.sdp;
    if (!sdp) throw new Error("no local description for the downlink");
    await answer(sdp);
    return ack;
  }

  async stats(): Promise<RTCStatsReport> {
    return this.pc.getStats();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
  }
}
