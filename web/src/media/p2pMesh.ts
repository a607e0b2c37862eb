// P2P media: one PeerLink per other participant, all sending the same LocalMedia tracks.

import type { SignalMessage, SignalType } from "../protocol";
import type { LocalMedia } from "./localMedia";
import { PeerLink } from "./peerLink";

export type SendTo = (
  to: string,
  type: SignalType,
  body: { sdp?: string; candidate?: RTCIceCandidateInit },
) => Promise<void>;

/** How long ICE may stay "disconnected" before we restart it (it often recovers alone). */
const DISCONNECTED_GRACE_MS = 3_000;

export interface MeshEvents {
  onRemoteStream(participantId: string): void;
  onLinkState(participantId: string, state: RTCIceConnectionState): void;
  onError(participantId: string, err: unknown): void;
}

export class P2PMesh {
  private readonly links = new Map<string, PeerLink>();
  private readonly restartTimers = new Map<string, number>();
  private readonly offTracks: () => void;

  constructor(
    private readonly local: LocalMedia,
    private iceServers: RTCIceServer[],
    private readonly sendTo: SendTo,
    private readonly canSignal: () => boolean,
    private readonly events: MeshEvents,
  ) {
    this.offTracks = local.onTrackChange((kind, track) => {
      for (const link of this.links.values()) {
        link.replaceTrack(kind, track).catch((err) => this.events.onError(link.remoteId, err));
      }
    });
  }

  private create(remoteId: string, polite: boolean): PeerLink {
    const link = new PeerLink(
      remoteId,
      polite,
      this.iceServers,
      this.local,
      (type, body) => this.sendTo(remoteId, type, body),
      {
        onRemoteStream: () => this.events.onRemoteStream(remoteId),
        onState: (state) => this.onState(link, state),
        onError: (err) => this.events.onError(remoteId, err),
      },
    );
    this.links.set(remoteId, link);
    return link;
  }

  private onState(link: PeerLink, state: RTCIceConnectionState): void {
    this.events.onLinkState(link.remoteId, state);
    const pending = this.restartTimers.get(link.remoteId);
    if (pending !== undefined) {
      window.clearTimeout(pending);
      this.restartTimers.delete(link.remoteId);
    }
    if (state === "failed" && this.canSignal()) {
      link.restartIce();
    } else if (state === "disconnected") {
      const timer = window.setTimeout(() => {
        this.restartTimers.delete(link.remoteId);
        if (link.pc.iceConnectionState === "disconnected" && this.canSignal()) link.restartIce();
      }, DISCONNECTED_GRACE_MS);
      this.restartTimers.set(link.remoteId, timer);
    }
  }

  connect(participantId: string): void {
    if (!this.links.has(participantId)) this.create(participantId, false);
  }

  disconnect(participantId: string): void {
    this.links.get(participantId)?.close();
    this.links.delete(participantId);
  }

  has(participantId: string): boolean {
    return this.links.has(participantId);
  }

  handleSignal(msg: SignalMessage): void {
    let link = this.links.get(msg.from);
    if (!link) {
      if (msg.type !== "offer" && msg.type !== "ice-restart") return;
      link = this.create(msg.from, true);
    }
    void link.handleSignal(msg);
  }

  restartUnhealthy(): void {
    for (const link of this.links.values()) {
      const s = link.pc.iceConnectionState;
      if (s === "disconnected" || s === "failed") link.restartIce();
    }
  }

  /** Fresh TURN credentials for the links made from now on. */
  setIceServers(servers: RTCIceServer[]): void {
    if (servers.length) this.iceServers = servers;
  }

  link(participantId: string): PeerLink | undefined {
    return this.links.get(participantId);
  }

  get linked(): Set<string> {
    return new Set(this.links.keys());
  }

  /** Close every direct link (the call moved to the SFU); the mesh stays usable. */
  closeAll(): void {
    for (const t of this.restartTimers.values()) window.clearTimeout(t);
    this.restartTimers.clear();
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }

  close(): void {
    this.offTracks();
    for (const t of this.restartTimers.values()) window.clearTimeout(t);
    this.restartTimers.clear();
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }
}
