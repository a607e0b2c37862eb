// The downlink's slot table as this client knows it: which m-line (mid) carries whose media
// now. Fed by the downlink's offer and by `call:slots`; a version at or below the last applied
// one is ignored (events and acks can cross), so the table only moves forward. Pure.

import type { MediaKind, SlotInfo } from "../protocol";

export class SlotMap {
  private versionApplied = -1;
  private table: SlotInfo[] = [];
  /** The newest `call:slots` seen, kept in case it arrived before the downlink it describes. */
  private newest: { version: number; slots: SlotInfo[] } | null = null;

  get version(): number {
    return this.versionApplied;
  }

  get slots(): readonly SlotInfo[] {
    return this.table;
  }

  /** The downlink's own offer: its m-lines replace the table (a re-opened downlink). */
  reset(version: number, slots: readonly SlotInfo[]): void {
    this.table = slots.map((s) => ({ ...s }));
    this.versionApplied = version;
    const newer = this.newest;
    if (newer && newer.version > version) this.update(newer.version, newer.slots);
  }

  /** A `call:slots`; returns whether anything changed. */
  update(version: number, slots: readonly SlotInfo[]): boolean {
    if (!this.newest || version > this.newest.version) this.newest = { version, slots: [...slots] };
    if (version <= this.versionApplied || this.table.length === 0) return false;
    this.versionApplied = version;
    let changed = false;
    for (const info of slots) {
      const i = this.table.findIndex((s) => s.index === info.index && s.mid === info.mid);
      const current = this.table[i];
      if (!current) continue;
      if (current.showingId !== info.showingId || current.participantId !== info.participantId) changed = true;
      this.table[i] = { ...current, participantId: info.participantId, showingId: info.showingId };
    }
    return changed;
  }

  byMid(mid: string): SlotInfo | undefined {
    return this.table.find((s) => s.mid === mid);
  }

  /** The slot of `kind` that carries `participantId` now. */
  slotShowing(participantId: string, kind: MediaKind): SlotInfo | undefined {
    return this.table.find((s) => s.kind === kind && s.showingId === participantId);
  }

  /** Who the slots of `kind` carry now. */
  showing(kind: MediaKind): Set<string> {
    const out = new Set<string>();
    for (const s of this.table) if (s.kind === kind && s.showingId) out.add(s.showingId);
    return out;
  }

  capacity(kind: MediaKind): number {
    return this.table.filter((s) => s.kind === kind).length;
  }
}
