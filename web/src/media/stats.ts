// Connection figures of one peer connection from getStats(): round-trip time, bitrate in and
// out, packet loss, decoded video frames, the remote audio level. Pure: a report in, figures
// out, so it is tested without a browser.

export interface LinkStats {
  rttMs: number | null;
  inKbps: number;
  outKbps: number;
  /** Share of inbound packets lost since the previous sample, in percent. */
  lossPct: number | null;
  framesDecoded: number;
  fps: number;
  frameWidth: number;
  audioLevel: number;
}

export interface StatsCursor {
  atMs: number;
  bytesIn: number;
  bytesOut: number;
  packetsIn: number;
  packetsLost: number;
  framesDecoded: number;
}

type StatsEntry = Record<string, unknown> & { type: string; id: string };

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0);

export function summarize(
  entries: Iterable<StatsEntry>,
  previous: StatsCursor | null,
  nowMs: number,
): { cursor: StatsCursor; stats: LinkStats } {
  let bytesIn = 0;
  let bytesOut = 0;
  let packetsIn = 0;
  let packetsLost = 0;
  let framesDecoded = 0;
  let frameWidth = 0;
  let audioLevel = 0;
  let fps = 0;
  let rttS: number | null = null;
  let selectedPair: string | null = null;
  const pairs = new Map<string, StatsEntry>();
  for (const s of entries) {
    switch (s.type) {
      case "inbound-rtp":
        bytesIn += num(s["bytesReceived"]);
        packetsIn += num(s["packetsReceived"]);
        packetsLost += Math.max(0, num(s["packetsLost"]));
        if (s["kind"] === "video") {
          framesDecoded += num(s["framesDecoded"]);
          fps = Math.max(fps, num(s["framesPerSecond"]));
          frameWidth = Math.max(frameWidth, num(s["frameWidth"]));
        } else if (s["kind"] === "audio") {
          audioLevel = Math.max(audioLevel, num(s["audioLevel"]));
        }
        break;
      case "outbound-rtp":
        bytesOut += num(s["bytesSent"]);
        break;
      case "transport":
        if (typeof s["selectedCandidatePairId"] === "string") selectedPair = s["selectedCandidatePairId"];
        break;
      case "candidate-pair":
        pairs.set(s.id, s);
        break;
      default:
        break;
    }
  }
  const pair =
    (selectedPair ? pairs.get(selectedPair) : undefined) ??
    [...pairs.values()].find((p) => p["state"] === "succeeded" && p["nominated"] === true);
  if (pair && typeof pair["currentRoundTripTime"] === "number") rttS = pair["currentRoundTripTime"];
  const cursor: StatsCursor = { atMs: nowMs, bytesIn, bytesOut, packetsIn, packetsLost, framesDecoded };
  const dt = previous ? (nowMs - previous.atMs) / 1000 : 0;
  const rate = (now: number, before: number) => (dt > 0 ? Math.max(0, ((now - before) * 8) / 1000 / dt) : 0);
  let lossPct: number | null = null;
  if (previous) {
    const lost = packetsLost - previous.packetsLost;
    const got = packetsIn - previous.packetsIn;
    lossPct = lost + got > 0 ? (100 * Math.max(0, lost)) / (Math.max(0, lost) + Math.max(0, got)) : 0;
  }
  return {
    cursor,
    stats: {
      rttMs: rttS === null ? null : rttS * 1000,
      inKbps: previous ? rate(bytesIn, previous.bytesIn) : 0,
      outKbps: previous ? rate(bytesOut, previous.bytesOut) : 0,
      lossPct,
      framesDecoded,
      fps,
      frameWidth,
      audioLevel,
    },
  };
}

export function formatStats(s: LinkStats): string {
  const rtt = s.rttMs === null ? "RTT –" : `RTT ${Math.round(s.rttMs)} ms`;
  const rate =
    s.inKbps >= 1000 ? `${(s.inKbps / 1000).toFixed(1)} Mbps` : `${Math.round(s.inKbps)} kbps`;
  const loss = s.lossPct === null ? "loss –" : `loss ${s.lossPct.toFixed(1)} %`;
  return `${rtt} · ${rate} · ${loss}`;
}
