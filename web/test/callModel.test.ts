import assert from "node:assert/strict";
import { test } from "node:test";
import * as model from "../src/call/callModel";
import type { CallView, ParticipantView } from "../src/protocol";

const p = (id: string, extra: Partial<ParticipantView> = {}): ParticipantView => ({
  participantId: id,
  kind: "user",
  userId: id,
  displayName: id.toUpperCase(),
  language: "en",
  audioEnabled: true,
  videoEnabled: true,
  connection: "connected",
  ...extra,
});

const view = (participants: ParticipantView[], extra: Partial<CallView> = {}): CallView => ({
  callId: "call-1",
  conversationId: "conv",
  conversationType: "GROUP",
  status: "ringing",
  mode: "p2p",
  media: "video",
  initiatorUserId: "a",
  createdAt: 0,
  startedAt: null,
  endedAt: null,
  endReason: null,
  participants,
  invitees: [],
  ...extra,
});

test("a second participant makes a ringing call active", () => {
  const m = model.fromView(view([p("a")]), "a");
  const next = model.upsert(m, p("b"));
  assert.equal(next.status, "active");
  assert.deepEqual(model.others(next).map((x) => x.participantId), ["b"]);
});

test("upsert replaces a known participant in place", () => {
  const m = model.fromView(view([p("a"), p("b")], { status: "active" }), "a");
  const next = model.upsert(m, p("b", { connection: "reconnecting" }));
  assert.equal(next.participants.length, 2);
  assert.equal(model.find(next, "b")?.connection, "reconnecting");
});

test("patch changes media state of one participant only", () => {
  const m = model.fromView(view([p("a"), p("b")]), "a");
  const next = model.patch(m, "b", { audioEnabled: false });
  assert.equal(model.find(next, "b")?.audioEnabled, false);
  assert.equal(model.find(next, "a")?.audioEnabled, true);
});

test("reconcile after a resume names who came and went", () => {
  const m = model.fromView(view([p("a"), p("b"), p("c")]), "a");
  const { model: next, added, removed } = model.reconcile(m, view([p("a"), p("c"), p("d")]));
  assert.deepEqual(added, ["d"]);
  assert.deepEqual(removed, ["b"]);
  assert.equal(next.selfId, "a");
});

test("only the initiator or a moderator of a GROUP may end for all", () => {
  const group = model.fromView(view([p("a")]), "a");
  assert.equal(model.mayEndForAll(group, "a", "member"), true);
  assert.equal(model.mayEndForAll(group, "b", "member"), false);
  assert.equal(model.mayEndForAll(group, "b", "moderator"), true);
  assert.equal(model.mayEndForAll(group, null, null), false);
  const direct = model.fromView(view([p("a")], { conversationType: "DIRECT" }), "a");
  assert.equal(model.mayEndForAll(direct, "a", "admin"), false);
});

test("end reasons read as sentences", () => {
  assert.match(model.endReasonText("missed"), /No answer/);
  assert.match(model.endReasonText("completed", true), /You left/);
  assert.match(model.endReasonText("something_new"), /something_new/);
});
