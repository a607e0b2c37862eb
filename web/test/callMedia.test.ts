import assert from "node:assert/strict";
import { test } from "node:test";
import type { LocalMedia } from "../src/media/localMedia";
import type { CallView, ModeChanged, ModeSwitch } from "../src/protocol";
import type { Signaling } from "../src/signaling";

// CallMedia runs in a browser; these tests give it just enough of one (timers, MediaStream, a
// DOM) and no peer connections: they exercise only the switches that open none.
const g = globalThis as unknown as Record<string, unknown>;
g.window ??= globalThis;
g.MediaStream ??= class {
  getTracks(): unknown[] {
    return [];
  }
  addTrack(): void {}
  removeTrack(): void {}
};
const element = () => ({ className: "", hidden: false, remove: () => undefined, appendChild: () => undefined });
g.document ??= { createElement: element, body: element() };
const { CallMedia } = await import("../src/media/callMedia");

function make(view: Partial<CallView>) {
  const requests: string[] = [];
  const signaling = {
    request: async (event: string) => {
      requests.push(event);
      return {};
    },
  } as unknown as Signaling;
  const local = { onTrackChange: () => () => undefined } as unknown as LocalMedia;
  const host = {
    callId: "c",
    selfId: "p-a",
    conversationType: "GROUP" as const,
    participants: () => [],
    online: () => true,
    changed: () => undefined,
    notice: () => undefined,
  };
  const media = new CallMedia(host, signaling, local, [], { callId: "c", mode: "p2p", epoch: 0, migration: null, ...view } as CallView);
  return { media, requests };
}

const changed = (epoch: number, extra: Partial<ModeChanged> = {}): ModeChanged => ({
  callId: "c",
  mode: "p2p",
  fromMode: "sfu",
  toMode: "p2p",
  epoch,
  outcome: "completed",
  reason: null,
  ...extra,
});
const toP2p = (epoch: number): ModeSwitch =>
  ({ callId: "c", participantId: "p-a", epoch, mode: "p2p", kind: "migration", reason: "", prewarmed: false, deadlineS: 15, sfu: null, p2p: null, iceServers: [] }) as unknown as ModeSwitch;

test("migration events older than the one acted on are dropped", async () => {
  const { media } = make({ mode: "sfu", epoch: 4 });
  media.onMigrationStarted({ callId: "c", fromMode: "sfu", toMode: "p2p", epoch: 5, reason: "" });
  assert.equal(media.badge.to, "p2p");
  media.onMigrationStarted({ callId: "c", fromMode: "p2p", toMode: "sfu", epoch: 3, reason: "" });
  assert.equal(media.migratingTo, "p2p", "an older start does not undo the newer one");
  media.onModeChanged(changed(4, { mode: "p2p", fromMode: "p2p", toMode: "sfu" }));
  assert.equal(media.primary, "sfu", "an older mode change is not applied");
  media.onModeChanged(changed(5));
  assert.equal(media.primary, "p2p");
  await media.onModeSwitch(toP2p(5));
  assert.equal(media.migratingTo, null, "a late switch of a finished migration is dropped");
  media.close();
});

test("a resume's view applies a move that ended while away", async () => {
  const { media } = make({ mode: "sfu", epoch: 1 });
  await media.onModeSwitch(toP2p(2));
  assert.equal(media.migratingTo, "p2p");
  // Away: the move completed and its mode-changed was lost.
  media.reconcile({ callId: "c", mode: "p2p", epoch: 2, migration: null });
  assert.deepEqual([media.primary, media.migratingTo], ["p2p", null]);
  media.onModeChanged(changed(2));
  assert.equal(media.primary, "p2p", "the lost event, arriving late, changes nothing");
  // An older view (a reordered ack) keeps what we have.
  media.reconcile({ callId: "c", mode: "sfu", epoch: 1, migration: null });
  assert.equal(media.primary, "p2p");
  // A migration under way: the badge shows it; its switch is told again.
  media.reconcile({ callId: "c", mode: "p2p", epoch: 3, migration: { epoch: 3, fromMode: "p2p", toMode: "sfu" } });
  assert.equal(media.badge.to, "sfu");
  // It failed while away: same mode, no migration.
  media.reconcile({ callId: "c", mode: "p2p", epoch: 3, migration: null });
  assert.deepEqual([media.primary, media.migratingTo], ["p2p", null]);
  media.close();
});
