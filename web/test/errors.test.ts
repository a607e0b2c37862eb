import assert from "node:assert/strict";
import { test } from "node:test";
import { AppError, fromConnectError, fromServer, mediaError } from "../src/errors";
import { identityOf } from "../src/auth";

test("a server refusal keeps its code and reads as a sentence", () => {
  const e = fromServer({ code: "forbidden", message: "a DIRECT conversation never admits a guest" }, 403);
  assert.equal(e.code, "forbidden");
  assert.equal(e.status, 403);
  assert.equal(e.readable, "Not allowed: a DIRECT conversation never admits a guest");
  assert.equal(fromServer({ code: "weird" }).code, "internal");
});

test("a socket refusal is understood as data or as the gateway's printed dict", () => {
  const asData = Object.assign(new Error("refused"), { data: { code: "unauthorized", message: "token expired" } });
  assert.equal(fromConnectError(asData).code, "unauthorized");
  const printed = new Error("{'code': 'unauthorized', 'message': 'the token is not a valid JWT'}");
  const e = fromConnectError(printed);
  assert.equal(e.code, "unauthorized");
  assert.equal(e.reason, "the token is not a valid JWT");
  assert.equal(fromConnectError(new Error("websocket error")).code, "network");
});

test("camera errors say what to do", () => {
  const e = mediaError(new DOMException("denied", "NotAllowedError"));
  assert.ok(e instanceof AppError);
  assert.match(e.readable, /allow the camera/);
});

test("identity is read from a token's claims (guest tokens name their conversation)", () => {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const token = `${b64({ alg: "HS256" })}.${b64({ sub: "guest-1", iss: "meeshy-calls-gateway", conv: "demo-group", name: "Zoé", lang: "fr", exp: 10 })}.sig`;
  const id = identityOf(token);
  assert.equal(id?.kind, "guest");
  assert.equal(id?.conversationId, "demo-group");
  assert.equal(id?.displayName, "Zoé");
  assert.equal(identityOf("not-a-token"), null);
});
