import assert from "node:assert/strict";
import { test } from "node:test";
import { CaptionStore } from "../src/captions/captionStore";
import type { CaptionEvent } from "../src/protocol";

const ev = (extra: Partial<CaptionEvent>): CaptionEvent => ({
  callId: "c",
  utteranceId: "u1",
  speakerParticipantId: "p-alice",
  language: "es",
  text: "hola",
  sourceLanguage: "en",
  sourceText: "hello",
  isFinal: false,
  revision: 1,
  translated: true,
  ...extra,
});
const names = (id: string) => (id === "p-alice" ? "Alice" : "");

test("interim text is replaced by later revisions and the final, announced once", () => {
  const store = new CaptionStore();
  assert.deepEqual(store.apply(ev({}), names, "p-bob"), { changed: true, announce: null });
  store.apply(ev({ revision: 2, text: "hola a" }), names, "p-bob");
  const final = store.apply(ev({ revision: 3, text: "hola a todos", isFinal: true }), names, "p-bob");
  assert.equal(final.announce, "Alice: hola a todos");
  assert.equal(store.lines.length, 1);
  assert.equal(store.lines[0]?.text, "hola a todos");
  // A late interim revision or a repeated final changes nothing and is not announced again.
  assert.deepEqual(store.apply(ev({ revision: 2, text: "hola" }), names, "p-bob"), { changed: false, announce: null });
  assert.deepEqual(
    store.apply(ev({ revision: 3, text: "hola a todos", isFinal: true }), names, "p-bob"),
    { changed: false, announce: null },
  );
});

test("a final revised by a continuation replaces the line and is announced once per text", () => {
  const store = new CaptionStore();
  const first = store.apply(ev({ revision: 1, text: "hola", isFinal: true }), names, "p-bob");
  assert.equal(first.announce, "Alice: hola");
  const firstSeq = store.lines[0]?.seq ?? 0;
  store.apply(ev({ utteranceId: "u2", revision: 1, text: "otra" }), names, "p-bob");
  // The continuation: same utterance, higher revision, longer text.
  const more = store.apply(ev({ revision: 2, text: "hola a todos", isFinal: true }), names, "p-bob");
  assert.deepEqual(more, { changed: true, announce: "Alice: hola a todos" });
  assert.equal(store.lines.length, 2);
  assert.equal(store.lines[0]?.text, "hola a todos");
  assert.ok((store.lines[0]?.seq ?? 0) > (store.lines[1]?.seq ?? 0) && (store.lines[0]?.seq ?? 0) > firstSeq, "seq: the order received");
  // A higher revision with the same final text updates the line but is not read out again.
  const same = store.apply(ev({ revision: 3, text: "hola a todos", isFinal: true }), names, "p-bob");
  assert.deepEqual(same, { changed: true, announce: null });
  // An interim continuation after the final shows, unannounced; its final is announced.
  assert.deepEqual(store.apply(ev({ revision: 4, text: "hola a todos y" }), names, "p-bob"), {
    changed: true,
    announce: null,
  });
  assert.equal(store.lines[0]?.isFinal, false);
  const last = store.apply(ev({ revision: 5, text: "hola a todos y todas", isFinal: true }), names, "p-bob");
  assert.equal(last.announce, "Alice: hola a todos y todas");
});

test("the listener's own words are shown as 'You' and not announced", () => {
  const store = new CaptionStore();
  const r = store.apply(ev({ isFinal: true }), names, "p-alice");
  assert.equal(r.announce, null);
  assert.equal(store.lines[0]?.speakerName, "You");
  assert.equal(store.lines[0]?.own, true);
});

test("the list keeps the latest lines only", () => {
  const store = new CaptionStore();
  for (let i = 0; i < 100; i++) store.apply(ev({ utteranceId: `u${i}`, isFinal: true }), names, "x");
  assert.equal(store.lines.length, 60);
  assert.equal(store.lines[0]?.utteranceId, "u40");
});

test("an utterance whose latest revision says nothing leaves no empty line", () => {
  const store = new CaptionStore();
  store.apply(ev({ revision: 1, text: "hola" }), names, "p-bob");
  const emptied = store.apply(ev({ revision: 2, text: " ", isFinal: true }), names, "p-bob");
  assert.deepEqual(emptied, { changed: true, announce: null });
  assert.equal(store.lines.length, 0);
  // The older revision arriving late does not bring it back; a newer one does.
  assert.equal(store.apply(ev({ revision: 1, text: "hola" }), names, "p-bob").changed, false);
  assert.equal(store.apply(ev({ utteranceId: "u2", text: "", isFinal: true }), names, "p-bob").changed, false);
  assert.equal(store.lines.length, 0);
  store.apply(ev({ revision: 3, text: "hola a todos", isFinal: true }), names, "p-bob");
  assert.equal(store.lines[0]?.text, "hola a todos");
});
