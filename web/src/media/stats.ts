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

export type StatsEntry = Record<string, unknown> & { type: string; id: string };

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

/** Cursors by key (a participant and the receivers that carry them), for rates per tile. */
export class StatsBook {
  private readonly cursors = new Map<string, { key: string; cursor: StatsCursor }>();

  summarize(participantId: string, key: string, entries: Iterable<StatsEntry>, nowMs: number): LinkStats {
    const before = this.cursors.get(participantId);
    // Another receiver now carries them: the old counters say nothing about the new one.
    const previous = before && before.key === key ? before.cursor : null;
    const { cursor, stats } = summarize(entries, previous, nowMs);
    this.cursors.set(participantId, { key, cursor });
    return stats;
  }

  forget(participantId: string): void {
    this.cursors.delete(participantId);
  }
}

export interface InboundCounter {
  kind: "audio" | "video";
  mid: string | null;
  framesDecoded: number;
  packetsReceived: number;
}

/** The inbound receivers of a report with their running counters. */
export function inboundCounters(entries: Iterable<StatsEntry>): InboundCounter[] {
  const out: InboundCounter[] = [];
  for (const s of entries) {
    if (s.type !== "inbound-rtp") continue;
    const kind = s["kind"] === "video" ? "video" : s["kind"] === "audio" ? "audio" : null;
    if (!kind) continue;
    out.push({
      kind,
      mid: typeof s["mid"] === "string" ? s["mid"] : null,
      framesDecoded: num(s["framesDecoded"]),
      packetsReceived: num(s["packetsReceived"]),
    });
  }
  return out;
}

export async function statsEntries(pc: RTCPeerConnection): Promise<StatsEntry[]> {
  const report = await pc.getStats();
  const entries: StatsEntry[] = [];
  report.forEach((s: StatsEntry) => entries.push(s));
  return entries;
}

/** The entries that describe the receivers `mids` and the connection they arrive on. */
export function forMids(entries: readonly StatsEntry[], mids: ReadonlySet<string>): StatsEntry[] {
  return entries.filter((s) =>
    s.type === "inbound-rtp" ? typeof s["mid"] === "string" && mids.has(s["mid"]) : s.type === "transport" || s.type === "candidate-pair",
  );
}
