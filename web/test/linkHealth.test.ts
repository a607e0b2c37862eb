import assert from "node:assert/strict";
import { test } from "node:test";
import { linkFailure, NO_MEDIA_MS, OUTAGE_MS, STALL_MS, type LinkSample } from "../src/media/linkHealth";

const healthy: LinkSample = {
  ice: "connected",
  everMedia: true,
  ageMs: 60_000,
  videoExpected: true,
  sinceVideoMs: 500,
  sinceReceivedMs: 500,
  receivingForMs: 50_000,
};

test("a healthy link, or one whose camera is off, is not reported", () => {
  assert.equal(linkFailure(healthy), "");
  assert.equal(linkFailure({ ...healthy, videoExpected: false, sinceVideoMs: OUTAGE_MS * 2 }), "");
  assert.equal(linkFailure({ ...healthy, sinceVideoMs: STALL_MS }), "");
});

test("ICE failed, or nothing ever carried, is reported at once", () => {
  assert.equal(linkFailure({ ...healthy, ice: "failed" }), "ice_failed");
  assert.equal(
    linkFailure({ ...healthy, everMedia: false, sinceVideoMs: null, sinceReceivedMs: null, ageMs: NO_MEDIA_MS + 1 }),
    "no_media",
  );
});

test("frames that stop while packets still arrive on a live path are reported after the stall", () => {
  assert.equal(linkFailure({ ...healthy, sinceVideoMs: STALL_MS + 201, sinceReceivedMs: 200 }), "frames_stalled");
  assert.equal(linkFailure({ ...healthy, ice: "completed", sinceVideoMs: STALL_MS + 600 }), "frames_stalled");
  assert.equal(linkFailure({ ...healthy, sinceVideoMs: STALL_MS + 100, sinceReceivedMs: 200 }), "");
});

test("packets seen one sample after the last frame, then nothing: a drop, not a stall", () => {
  // The last frame 3.2 s ago; a few packets arrived a sample later (2.2 s ago), just before
  // the network dropped; ICE has not noticed yet.
  assert.equal(linkFailure({ ...healthy, sinceVideoMs: 3_200, sinceReceivedMs: 2_200 }), "");
});

test("a network that drops everything is left to the ICE restart, up to the outage limit", () => {
  // The network dropped: nothing arrives, ICE still says connected (it has not noticed yet),
  // then disconnected, then checking (the restart).
  for (const ice of ["connected", "disconnected", "checking"] as const) {
    const dropped = { ...healthy, ice, sinceVideoMs: STALL_MS + 2_000, sinceReceivedMs: STALL_MS + 2_000 };
    assert.equal(linkFailure(dropped), "", ice);
    assert.equal(linkFailure({ ...dropped, sinceVideoMs: OUTAGE_MS + 1 }), "frames_stalled", ice);
  }
  // Packets arrive again but ICE has not said connected yet: still not a media fault.
  assert.equal(linkFailure({ ...healthy, ice: "checking", sinceVideoMs: STALL_MS + 1, sinceReceivedMs: 0 }), "");
});

test("after the network is back, frames get a stall's time to resume before a report", () => {
  // ICE reconnected (the restart) and packets flow again, the last frame is long ago.
  const back = { ...healthy, sinceVideoMs: 12_000, sinceReceivedMs: 100, receivingForMs: 1_000 };
  assert.equal(linkFailure(back), "");
  assert.equal(linkFailure({ ...back, receivingForMs: STALL_MS + 50 }), "");
  assert.equal(linkFailure({ ...back, receivingForMs: STALL_MS + 101, sinceReceivedMs: 0 }), "frames_stalled");
});

test("a link that carried media and then nothing at all for an outage is reported, camera on or off", () => {
  const silent = { ...healthy, sinceReceivedMs: OUTAGE_MS + 1, receivingForMs: null };
  assert.equal(linkFailure({ ...silent, videoExpected: false, sinceVideoMs: null }), "no_media");
  assert.equal(linkFailure({ ...silent, sinceVideoMs: OUTAGE_MS + 1 }), "no_media");
  assert.equal(linkFailure({ ...silent, sinceReceivedMs: OUTAGE_MS - 1, videoExpected: false }), "");
});
