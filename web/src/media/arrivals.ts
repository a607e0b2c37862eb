// Where media from each participant arrives, by path ("p2p", "sfu:<sessionId>"), and the
// longest gap in the video a person saw. The migration reports from here: a new path is
// ready once it carries every other participant (`carriesEveryone`). Pure: times passed in.

import type { MediaKind } from "../protocol";

export type PathKey = string;

export const P2P: PathKey = "p2p";
export const sfuPath = (sessionId: string): PathKey => `sfu:${sessionId}`;

/** What must arrive from one participant for a path to count as carrying them. */
export interface Expected {
  participantId: string;
  audio: boolean;
  video: boolean;
}

export class ArrivalLog {
  /** path → participant → kind → last arrival (ms). */
  private readonly last = new Map<PathKey, Map<string, Partial<Record<MediaKind, number>>>>();

  note(path: PathKey, participantId: string, kind: MediaKind, atMs: number): void {
    let byWho = this.last.get(path);
    if (!byWho) {
      byWho = new Map();
      this.last.set(path, byWho);
    }
    const kinds = byWho.get(participantId) ?? {};
    kinds[kind] = atMs;
    byWho.set(participantId, kinds);
  }

  arrivedSince(path: PathKey, participantId: string, kind: MediaKind, sinceMs: number): boolean {
    const at = this.last.get(path)?.get(participantId)?.[kind];
    return at !== undefined && at >= sinceMs;
  }

  forgetPath(path: PathKey): void {
    this.last.delete(path);
  }
}

/**
 * Does `path` carry everyone since `sinceMs`? Each expected kind of each participant must
 * have arrived, except where the path has fewer slots than people (an SFU's last-N): then
 * as many participants as there are slots of that kind must be arriving.
 */
export function carriesEveryone(
  log: ArrivalLog,
  path: PathKey,
  sinceMs: number,
  expected: readonly Expected[],
  capacity: Partial<Record<MediaKind, number>> = {},
): boolean {
  for (const kind of ["audio", "video"] as const) {
    const wanted = expected.filter((e) => e[kind]);
    const got = wanted.filter((e) => log.arrivedSince(path, e.participantId, kind, sinceMs)).length;
    const slots = capacity[kind];
    const needed = slots === undefined ? wanted.length : Math.min(slots, wanted.length);
    if (got < needed) return false;
  }
  return true;
}

/** Presented video frames per participant: the longest pause anyone saw in a window. */
export class FrameClock {
  private readonly times = new Map<string, number[]>();
  private readonly totals = new Map<string, number>();

  constructor(private readonly keepMs = 60_000) {}

  frame(participantId: string, atMs: number): void {
    let list = this.times.get(participantId);
    if (!list) {
      list = [];
      this.times.set(participantId, list);
    }
    list.push(atMs);
    while (list.length > 0 && (list[0] ?? atMs) < atMs - this.keepMs) list.shift();
    this.totals.set(participantId, (this.totals.get(participantId) ?? 0) + 1);
  }

  /** Frames presented for this participant since the call began (across every path). */
  total(participantId: string): number {
    return this.totals.get(participantId) ?? 0;
  }

  /** The longest gap between frames in [fromMs, toMs] (counting from the last frame before). */
  maxGapMs(participantIds: Iterable<string>, fromMs: number, toMs: number): number {
    let worst = 0;
    for (const pid of participantIds) {
      const list = this.times.get(pid) ?? [];
      let previous: number | null = null;
      for (const t of list) {
        if (t < fromMs) {
          previous = t;
          continue;
        }
        if (t > toMs) break;
        if (previous !== null) worst = Math.max(worst, t - previous);
        previous = t;
      }
      if (previous !== null && toMs - previous > worst && previous >= fromMs - this.keepMs) {
        worst = Math.max(worst, toMs - previous);
      }
    }
    return worst;
  }

  forget(participantId: string): void {
    this.times.delete(participantId);
  }
}
