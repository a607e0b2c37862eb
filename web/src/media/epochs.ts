// Which migration events are still news: the gateway numbers each migration with a new epoch
// (docs/socket-protocol.md, "SFU and migrations"), and after a resume or a reordering a client
// can be told of an older epoch than one it already acted on. Acting on it would undo the
// newer move (close the path the call is on now), so such events are dropped here.

import type { CallView } from "../protocol";

export class EpochLedger {
  /** The highest epoch acted on. */
  acted: number;
  /** The highest epoch whose migration is over (its `call:mode-changed` acted on, or a view said so). */
  settled: number;
  /** The SFU session each epoch's switch brought up (null: a switch to P2P). */
  private readonly switched = new Map<number, string | null>();

  constructor(epoch: number, migrating: boolean) {
    this.acted = epoch;
    this.settled = migrating ? epoch - 1 : epoch;
  }

  static fromView(view: Pick<CallView, "epoch" | "migration">): EpochLedger {
    return new EpochLedger(view.epoch ?? 0, view.migration != null);
  }

  /** `call:migration-started`: news unless older than what we acted on or already over. */
  started(epoch: number): boolean {
    if (epoch < this.acted || epoch <= this.settled) return false;
    this.acted = epoch;
    return true;
  }

  /**
   * `call:mode-switch`: a migration's switch is news unless its epoch is older or over; an
   * attach (joining a call already on the SFU, or a new session after one closed) carries the
   * call's current epoch, so only an older one is dropped.
   */
  switch(epoch: number, kind: "migration" | "attach"): boolean {
    if (epoch < this.acted) return false;
    if (kind === "migration" && epoch <= this.settled) return false;
    this.acted = epoch;
    return true;
  }

  /** `call:mode-changed`: the end of a migration, acted on once, never for an older epoch. */
  changed(epoch: number): boolean {
    if (epoch < this.acted || epoch <= this.settled) return false;
    this.acted = epoch;
    this.settled = epoch;
    return true;
  }

  /** A view of the call (a resume's ack): news unless older; settled when it shows no migration. */
  view(epoch: number, migrating: boolean): boolean {
    if (epoch < this.acted) return false;
    this.acted = epoch;
    if (!migrating) this.settled = Math.max(this.settled, epoch);
    return true;
  }

  noteSession(epoch: number, sessionId: string | null): void {
    this.switched.set(epoch, sessionId);
    for (const e of [...this.switched.keys()]) if (e < epoch - 4) this.switched.delete(e);
  }

  /** The session the switch of `epoch` brought up; undefined when no switch was acted on. */
  sessionOf(epoch: number): string | null | undefined {
    return this.switched.get(epoch);
  }
}
