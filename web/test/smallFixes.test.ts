import assert from "node:assert/strict";
import { mock, test } from "node:test";
import { endReasonText, selfLeaveText } from "../src/call/callModel";
import { capText, MAX_TEXT } from "../src/captions/speechTranscriber";
import { Signaling } from "../src/signaling";

test("'You left the call.' only when the person left; otherwise why they are out", () => {
  assert.equal(selfLeaveText("left"), "You left the call.");
  assert.equal(selfLeaveText("removed"), "You were removed from the call.");
  assert.match(selfLeaveText("connection_lost"), /connection was lost/);
  assert.match(selfLeaveText("heartbeat_timeout"), /went silent/);
  assert.doesNotMatch(selfLeaveText("call_ended"), /You left/);
  assert.match(selfLeaveText("something_new"), /something_new/);
  assert.equal(endReasonText("completed", false), "The call has ended.");
});

test("Web Speech results are capped at 2,000 characters, newest words kept, no half emoji", () => {
  assert.equal(capText("hello there"), "hello there");
  const long = `${"start ".repeat(300)}${"😀 ".repeat(400)}the newest words`;
  const capped = capText(long);
  assert.ok(Array.from(capped).length <= MAX_TEXT, `${Array.from(capped).length} code points`);
  assert.ok(capped.startsWith("…") && capped.endsWith("the newest words"));
  assert.doesNotMatch(capped, /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/, "no unpaired surrogate");
});

test("close() cancels a pending connect retry", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const sig = new Signaling("t", "http://127.0.0.1:9");
    const socket = (sig as unknown as { socket: { disconnect(): void; connect(): void; listeners(e: string): ((e: unknown) => void)[] } }).socket;
    socket.disconnect(); // as after the server refused the handshake: socket.io stops retrying
    let connects = 0;
    socket.connect = () => {
      connects += 1;
    };
    const refused = Object.assign(new Error("starting"), { data: { code: "unavailable", message: "starting" } });
    for (const l of socket.listeners("connect_error")) l(refused);
    sig.close();
    mock.timers.tick(5_000);
    assert.equal(connects, 0, "no reconnect after close()");
    // Without close() the retry does happen (the test can fail).
    const sig2 = new Signaling("t", "http://127.0.0.1:9");
    const socket2 = (sig2 as unknown as { socket: typeof socket }).socket;
    socket2.disconnect();
    socket2.connect = () => {
      connects += 1;
    };
    for (const l of socket2.listeners("connect_error")) l(refused);
    mock.timers.tick(1_000);
    assert.equal(connects, 1);
    sig2.close();
  } finally {
    mock.timers.reset();
  }
});
