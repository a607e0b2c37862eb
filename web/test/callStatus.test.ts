import assert from "node:assert/strict";
import { test } from "node:test";
import { callStatusText, formatDuration } from "../src/ui/callStatus";

test("the live status names who the call is with; the ticking duration stays out of it", () => {
  const others = [{ displayName: "Bob" }, { displayName: "Carol" }];
  const at5 = callStatusText({ status: "active", title: "Team", others, elapsedS: 5.4 });
  const at6 = callStatusText({ status: "active", title: "Team", others, elapsedS: 6.2 });
  assert.equal(at5.status, "In call with Bob, Carol");
  assert.equal(at6.status, at5.status, "a second later the live region's text is unchanged (nothing re-announced)");
  assert.deepEqual([at5.duration, at6.duration], ["00:05", "00:06"]);
  assert.deepEqual(callStatusText({ status: "ringing", title: "Bob", others: [], elapsedS: null }), { status: "Calling Bob…", duration: "" });
  assert.equal(formatDuration(3725), "1:02:05");
});
