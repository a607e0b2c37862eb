// The seam between a call and how its media travels. Today: P2PMesh (one peer connection per
// other participant). Phase 2 adds an SFU session (one uplink and one downlink with media
// slots to a media node) behind the same interface, and a make-before-break switch that opens
// the new path with the same LocalMedia tracks before closing the old one.

import type { CallMode, SignalMessage } from "../protocol";
import type { LinkStats } from "./stats";

export interface MediaPathEvents {
  onRemoteStream(participantId: string, stream: MediaStream): void;
  onLinkState(participantId: string, state: RTCIceConnectionState): void;
  onError(participantId: string, err: unknown): void;
}

export interface MediaPath {
  readonly mode: CallMode;
  /** A participant entered (P2P: those already in the call offer to the newcomer). */
  connect(participantId: string): void;
  /** A participant left: drop what carried their media. */
  disconnect(participantId: string): void;
  has(participantId: string): boolean;
  handleSignal(msg: SignalMessage): void;
  /** After a network drop: new ICE where the path is not healthy. */
  restartUnhealthy(): void;
  stats(participantId: string): Promise<LinkStats | null>;
  close(): void;
}
