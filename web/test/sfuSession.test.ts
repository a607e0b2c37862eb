import assert from "node:assert/strict";
import { test } from "node:test";
import type { LocalMedia } from "../src/media/localMedia";
import { SfuSession } from "../src/media/sfuSession";
import type { Signaling } from "../src/signaling";

// Just enough of a browser's RTCPeerConnection for the session's bookkeeping: negotiation
// succeeds at once, senders remember the track they were given.
class FakeSender {
  track: unknown = null;
  async replaceTrack(t: unknown): Promise<void> {
    this.track = t;
  }
}
class FakePc {
  iceGatheringState = "complete";
  connectionState = "new";
  localDescription: { sdp: string } | null = null;
  readonly senders: FakeSender[] = [];
  addEventListener(): void {}
  removeEventListener(): void {}
  addTransceiver() {
    const sender = new FakeSender();
    this.senders.push(sender);
    return { sender };
  }
  getTransceivers(): unknown[] {
    return [];
  }
  async createOffer() {
    return { type: "offer", sdp: "v=0 offer" };
  }
  async createAnswer() {
    return { type: "answer", sdp: "v=0 answer" };
  }
  async setLocalDescription(d: { sdp: string }): Promise<void> {
    this.localDescription = d;
  }
  async setRemoteDescription(): Promise<void> {}
  close(): void {}
}
const g = globalThis as unknown as Record<string, unknown>;
g.window ??= globalThis;
g.RTCPeerConnection = FakePc;

const mic = { kind: "audio" };
const local = {
  stream: {},
  audioTrack: mic,
  outgoingVideo: { kind: "video" },
  onTrackChange: () => () => undefined,
} as unknown as LocalMedia;

function signaling(handlers: Record<string, () => Promise<unknown>>): Signaling {
  return { request: (event: string) => (handlers[event] ?? (async () => ({})))() } as unknown as Signaling;
}
const ok = {
  "call:sfu-publish": async () => ({ sdp: "v=0 answer", sessionId: "s1" }),
  "call:sfu-downlink": async () => ({ sdp: "v=0 offer", sessionId: "s1", version: 1, slots: [] }),
};
const events = { changed: () => undefined, failed: () => undefined };

test("a session whose opening failed can be opened again", async () => {
  let refuse = true;
  const sig = signaling({
    ...ok,
    "call:sfu-publish": async () => {
      if (refuse) throw new Error("node busy");
      return { sdp: "v=0 answer", sessionId: "s1" };
    },
  });
  const s = new SfuSession({ nodeId: "n1", sessionId: "s1" } as never, "c", sig, local, [], events, { prewarmed: false });
  await assert.rejects(s.open(), /node busy/);
  refuse = false;
  await s.open(); // not the kept rejection: a fresh attempt
  assert.ok(s.uplink && s.downlink);
  s.close();
});

test("going live while the uplink is being published reaches the new uplink", async () => {
  let release: () => void = () => undefined;
  const sig = signaling({
    ...ok,
    "call:sfu-publish": () =>
      new Promise((resolve) => {
        release = () => resolve({ sdp: "v=0 answer", sessionId: "s1" });
      }),
  });
  const s = new SfuSession({ nodeId: "n1", sessionId: "s1" } as never, "c", sig, local, [], events, { prewarmed: true });
  const opening = s.open();
  assert.ok(s.uplink, "the uplink is the session's as soon as it exists");
  assert.equal(s.sending, false, "pre-warmed: sending nothing");
  await s.startSending(); // the switch, while the node has not answered yet
  release();
  await opening;
  assert.equal(s.sending, true);
  const pc = s.uplink?.pc as unknown as FakePc;
  assert.ok(pc.senders.some((x) => x.track === mic), "the microphone is on the uplink's sender");
  s.close();
});
