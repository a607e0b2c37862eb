// When a direct (P2P) link is reported as failed: docs/socket-protocol.md, "A client watches
// its direct links". A reported link moves the call to the SFU, so a link whose network only
// dropped for a while is left to ICE (the mesh restarts it, p2pMesh.ts) before it is reported.

/** A direct link that carried nothing this long after it was made is reported. */
export const NO_MEDIA_MS = 15_000;
/** A direct link whose video stopped this long while ICE is up and packets still arrive. */
export const STALL_MS = 3_000;
/** A direct link on which nothing arrives at all is network trouble: ICE notices it and the
 * mesh restarts ICE; only an outage this long (the restart did not bring it back) is reported. */
export const OUTAGE_MS = 20_000;

export type LinkFailure = "" | "ice_failed" | "no_media" | "frames_stalled";

export interface LinkSample {
  ice: RTCIceConnectionState;
  /** The link has carried media at some point. */
  everMedia: boolean;
  /** Since the link was made. */
  ageMs: number;
  /** The other participant's camera is on. */
  videoExpected: boolean;
  /** Since the last decoded video frame on this link; null: none yet. */
  sinceVideoMs: number | null;
  /** Since the link's transport last received anything (RTP, RTCP); null: never. */
  sinceReceivedMs: number | null;
  /** How long it has been receiving without a break (since the network came back). */
  receivingForMs: number | null;
}

/** A pause in arrivals longer than this is a break (the stats are sampled about every second). */
export const RECEIVE_GAP_MS = 2_500;

export function linkFailure(s: LinkSample): LinkFailure {
  if (s.ice === "failed") return "ice_failed";
  if (!s.everMedia && s.ageMs > NO_MEDIA_MS) return "no_media";
  // Nothing at all (not even RTCP) for an outage's time: the ICE restarts did not bring
  // the path back. Also for a link without video (audio only, camera off).
  if (s.everMedia && s.sinceReceivedMs !== null && s.sinceReceivedMs > OUTAGE_MS) return "no_media";
  if (!s.videoExpected || s.sinceVideoMs === null || s.sinceVideoMs <= STALL_MS) return "";
  const up = s.ice === "connected" || s.ice === "completed";
  if (up && s.sinceReceivedMs !== null && s.sinceReceivedMs <= RECEIVE_GAP_MS) {
    // Packets kept arriving, without a break, for a stall's time after the last frame (and
    // since they came back after a drop: frames need a moment and a keyframe then): the
    // direct path is broken for media. Measured up to the last packet, not to now: the
    // stats are sampled, and packets that arrived one sample after the last frame, just
    // before the network dropped, are no sign of a live path.
    const received = Math.min(s.sinceVideoMs, s.receivingForMs ?? 0) - s.sinceReceivedMs;
    if (received > STALL_MS) return "frames_stalled";
  }
  // Nothing arrives: give ICE (and its restart) the time to bring the path back.
  return s.sinceVideoMs > OUTAGE_MS ? "frames_stalled" : "";
}
