import assert from "node:assert/strict";
import { test } from "node:test";
import { formatStats, summarize } from "../src/media/stats";

const report = (bytesIn: number, packets: number, lost: number, frames: number) => [
  { type: "inbound-rtp", id: "v", kind: "video", bytesReceived: bytesIn, packetsReceived: packets, packetsLost: lost, framesDecoded: frames, framesPerSecond: 30, frameWidth: 640 },
  { type: "inbound-rtp", id: "a", kind: "audio", bytesReceived: 1000, packetsReceived: 50, packetsLost: 0, audioLevel: 0.3 },
  { type: "outbound-rtp", id: "o", bytesSent: bytesIn / 2 },
  { type: "transport", id: "t", selectedCandidatePairId: "cp1" },
  { type: "candidate-pair", id: "cp0", state: "failed", currentRoundTripTime: 9 },
  { type: "candidate-pair", id: "cp1", state: "succeeded", nominated: true, currentRoundTripTime: 0.012 },
];

test("first sample has figures but no rates", () => {
  const { stats } = summarize(report(10_000, 100, 0, 10), null, 1_000);
  assert.equal(stats.rttMs, 12);
  assert.equal(stats.inKbps, 0);
  assert.equal(stats.lossPct, null);
  assert.equal(stats.framesDecoded, 10);
  assert.equal(stats.audioLevel, 0.3);
});

test("rates and loss come from the difference between samples", () => {
  const first = summarize(report(10_000, 100, 0, 10), null, 1_000);
  const { stats } = summarize(report(135_000, 190, 10, 40), first.cursor, 2_000);
  // (125,000 bytes * 8) / 1 s = 1,000 kbps on the inbound side.
  assert.equal(Math.round(stats.inKbps), 1_000);
  assert.equal(Math.round(stats.outKbps), 500);
  // 10 lost of 100 expected.
  assert.equal(stats.lossPct, 10);
  assert.equal(stats.framesDecoded, 40);
  assert.equal(formatStats(stats), "RTT 12 ms · 1.0 Mbps · loss 10.0 %");
});

test("without a selected pair the nominated succeeded pair gives the RTT", () => {
  const entries = report(0, 0, 0, 0).filter((e) => e.type !== "transport");
  assert.equal(summarize(entries, null, 0).stats.rttMs, 12);
});
