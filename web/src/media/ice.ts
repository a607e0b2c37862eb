// ICE helpers shared by the SFU legs: the servers a message names, and waiting for
// candidates (the SFU legs exchange complete descriptions: there is no trickle to a node).

import type { IceServerView } from "../protocol";

export function toRtcIceServers(servers: readonly IceServerView[] | undefined): RTCIceServer[] {
  return (servers ?? []).map((s) => ({
    urls: s.urls,
    ...(s.username ? { username: s.username } : {}),
    ...(s.credential ? { credential: s.credential } : {}),
  }));
}

/** Until ICE gathering completes, or `timeoutMs` (then what was gathered goes out). */
export function gathered(pc: RTCPeerConnection, timeoutMs = 3_000): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      window.clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = window.setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
