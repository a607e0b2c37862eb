import assert from "node:assert/strict";
import { test } from "node:test";
import { ArrivalLog, carriesEveryone, FrameClock, P2P, sfuPath } from "../src/media/arrivals";
import { EpochLedger } from "../src/media/epochs";
import { SlotMap } from "../src/media/slotMap";
import { afterModeChange, meshOffers, offerToNewcomer } from "../src/media/switchRules";
import type { SlotInfo } from "../src/protocol";

const slot = (index: number, kind: "audio" | "video", showing: string | null, assigned = showing): SlotInfo => ({
  index,
  mid: String(index),
  kind,
  ssrc: 1000 + index,
  participantId: assigned,
  showingId: showing,
});

test("the slot map only moves forward, and keeps a newer event that came before the downlink", () => {
  const m = new SlotMap();
  assert.equal(m.update(5, [slot(0, "video", "bob")]), false, "no downlink yet: nothing to apply");
  m.reset(3, [slot(0, "video", null), slot(1, "audio", null)]);
  assert.equal(m.version, 5, "the newer slots event was applied over the offer");
  assert.equal(m.slotShowing("bob", "video")?.mid, "0");
  assert.equal(m.update(4, [slot(0, "video", "carol")]), false, "an older version is ignored");
  assert.equal(m.slotShowing("bob", "video")?.mid, "0");
  assert.equal(m.update(6, [slot(0, "video", "carol", "carol"), slot(1, "audio", "bob")]), true);
  assert.deepEqual([...m.showing("video")], ["carol"]);
  assert.equal(m.slotShowing("bob", "audio")?.mid, "1");
  assert.equal(m.capacity("video"), 1);
  // Assigned but waiting for a keyframe: the slot still shows the previous publisher.
  m.update(7, [slot(0, "video", "carol", "dave")]);
  assert.equal(m.slotShowing("dave", "video"), undefined);
});

test("a path carries everyone once each expected kind arrived, within the slots it has", () => {
  const log = new ArrivalLog();
  const sfu = sfuPath("s1");
  const expected = [
    { participantId: "bob", audio: true, video: true },
    { participantId: "carol", audio: true, video: false }, // camera off: no video expected
  ];
  log.note(sfu, "bob", "video", 100);
  log.note(sfu, "bob", "audio", 100);
  assert.equal(carriesEveryone(log, sfu, 50, expected), false, "carol's audio is missing");
  log.note(sfu, "carol", "audio", 120);
  assert.equal(carriesEveryone(log, sfu, 50, expected), true);
  assert.equal(carriesEveryone(log, sfu, 110, expected), false, "bob's media is older than the switch");
  assert.equal(carriesEveryone(log, P2P, 0, expected), false, "another path");
  // One audio slot for two speakers: one arriving is all the path can carry.
  log.note(sfu, "bob", "audio", 200);
  log.note(sfu, "bob", "video", 200);
  assert.equal(carriesEveryone(log, sfu, 150, expected, { audio: 1, video: 3 }), true);
  assert.equal(carriesEveryone(log, sfu, 0, []), true, "alone in the call");
});

test("the frame clock measures the longest pause anyone saw", () => {
  const clock = new FrameClock();
  for (const t of [0, 50, 100, 400, 450]) clock.frame("bob", t);
  for (const t of [0, 30, 60]) clock.frame("carol", t);
  assert.equal(clock.maxGapMs(["bob"], 0, 450), 300);
  assert.equal(clock.maxGapMs(["bob"], 420, 450), 50, "counted from the last frame before the window");
  assert.equal(clock.maxGapMs(["carol"], 0, 100), 40, "the time since the last frame counts too");
  assert.equal(clock.total("bob"), 5);
});

test("newcomers get an offer only in a call that stays peer-to-peer", () => {
  const base = { conversationType: "GROUP" as const, primary: "p2p" as const, migratingTo: null };
  assert.equal(offerToNewcomer({ ...base, activeCount: 2 }), true);
  assert.equal(offerToNewcomer({ ...base, activeCount: 3 }), false, "the call is going to the SFU");
  assert.equal(offerToNewcomer({ ...base, conversationType: "DIRECT", activeCount: 2 }), true);
  assert.equal(offerToNewcomer({ ...base, primary: "sfu", activeCount: 2 }), false);
  assert.equal(offerToNewcomer({ ...base, migratingTo: "sfu", activeCount: 2 }), false);
  assert.deepEqual(meshOffers("p-b", ["p-a", "p-c", "p-d"], new Set(["p-d"])), ["p-c"]);
});

test("after a migration: drop the old path when it completed, the new one when it failed", () => {
  const ctx = {
    selfId: "p-a",
    others: ["p-b", "p-c"],
    linked: new Set(["p-b"]),
    newSession: { sessionId: "s2", prewarmed: false },
    sessions: [
      { sessionId: "s1", prewarmed: false },
      { sessionId: "s2", prewarmed: false },
    ],
    primarySession: null,
  };
  const toSfu = afterModeChange({ outcome: "completed", fromMode: "p2p", toMode: "sfu" }, ctx);
  assert.deepEqual(toSfu, { primary: "sfu", closeP2P: true, closeSessions: ["s1"], idleSessions: [], offerTo: [] });

  const failed = afterModeChange({ outcome: "failed", fromMode: "p2p", toMode: "sfu" }, ctx);
  assert.equal(failed.primary, "p2p");
  assert.deepEqual(failed.closeSessions, ["s2"]);
  assert.deepEqual(failed.offerTo, ["p-c"], "the mesh is completed: the smaller id offers");

  const prewarmed = afterModeChange(
    { outcome: "rolled_back", fromMode: "p2p", toMode: "sfu" },
    { ...ctx, newSession: { sessionId: "s2", prewarmed: true } },
  );
  assert.deepEqual([prewarmed.closeSessions, prewarmed.idleSessions], [[], ["s2"]], "a pre-warmed session goes back to idle");

  const toP2p = afterModeChange({ outcome: "completed", fromMode: "sfu", toMode: "p2p" }, { ...ctx, primarySession: "s2" });
  assert.deepEqual([toP2p.primary, toP2p.closeP2P, toP2p.closeSessions], ["p2p", false, ["s1", "s2"]]);

  const notBack = afterModeChange({ outcome: "failed", fromMode: "sfu", toMode: "p2p" }, { ...ctx, primarySession: "s2" });
  assert.deepEqual([notBack.primary, notBack.closeP2P, notBack.closeSessions], ["sfu", true, []]);

  const nodeMove = afterModeChange(
    { outcome: "failed", fromMode: "sfu", toMode: "sfu" },
    { ...ctx, primarySession: "s1", newSession: { sessionId: "s2", prewarmed: false } },
  );
  assert.deepEqual([nodeMove.primary, nodeMove.closeSessions, nodeMove.offerTo], ["sfu", ["s2"], []], "the old node's session stays");
});

test("a completed move to the SFU never guesses which session to keep", () => {
  const sessions = [
    { sessionId: "s-new", prewarmed: false },
    { sessionId: "s-old", prewarmed: true }, // the last one held is not the migration's
  ];
  const base = { selfId: "p-a", others: ["p-b"], linked: new Set<string>(), sessions, primarySession: null };
  const known = afterModeChange(
    { outcome: "completed", fromMode: "p2p", toMode: "sfu" },
    { ...base, newSession: { sessionId: "s-new", prewarmed: false } },
  );
  assert.deepEqual(known.closeSessions, ["s-old"]);
  const unknown = afterModeChange({ outcome: "completed", fromMode: "p2p", toMode: "sfu" }, { ...base, newSession: null });
  assert.deepEqual([unknown.primary, unknown.closeSessions], ["sfu", []], "unknown: close none");
  const onPrimary = afterModeChange(
    { outcome: "completed", fromMode: "sfu", toMode: "sfu" },
    { ...base, newSession: null, primarySession: "s-new" },
  );
  assert.deepEqual(onPrimary.closeSessions, ["s-old"], "unknown new session: keep the one the call is on");
});

test("the epoch ledger drops migration events older than the one acted on", () => {
  const l = new EpochLedger(2, false); // a call at epoch 2, no migration under way
  assert.equal(l.switch(2, "migration"), false, "epoch 2's migration is over");
  assert.equal(l.switch(2, "attach"), true, "joining the call as it is now");
  assert.equal(l.started(3), true);
  assert.equal(l.switch(3, "migration"), true);
  assert.equal(l.started(3), true, "told again: still news until it ends");
  assert.equal(l.changed(3), true);
  assert.equal(l.changed(3), false, "a mode change is acted on once");
  assert.equal(l.started(3), false, "a late start of a finished migration");
  assert.equal(l.switch(3, "migration"), false, "a late switch of a finished migration");
  assert.equal(l.switch(3, "attach"), true, "a new session of the call's current epoch");
  assert.equal(l.switch(5, "migration"), true);
  assert.equal(l.changed(4), false, "older than the switch acted on");
  assert.equal(l.started(4), false);
  assert.equal(l.switch(4, "attach"), false);
  assert.deepEqual([l.acted, l.settled], [5, 3]);

  const migrating = EpochLedger.fromView({ epoch: 7, migration: { epoch: 7, fromMode: "p2p", toMode: "sfu" } });
  assert.equal(migrating.switch(7, "migration"), true, "joined mid-migration: its switch is news");
  migrating.noteSession(7, "s7");
  assert.equal(migrating.sessionOf(7), "s7");
  assert.equal(migrating.sessionOf(6), undefined, "no switch acted on: unknown, not guessed");
});
