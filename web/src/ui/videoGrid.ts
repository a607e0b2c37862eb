// The grid of tiles, kept by participant id so a video element is never rebuilt while it plays.
// Pinned tiles come first and take more room.

import { h } from "../dom";
import { ParticipantTile, type TileActions, type TileData } from "./participantTile";

export class VideoGrid {
  readonly el: HTMLElement;
  private readonly tiles = new Map<string, ParticipantTile>();

  constructor(private readonly actions: TileActions) {
    this.el = h("div", { class: "video-grid", role: "list", "aria-label": "Participants" });
  }

  update(items: TileData[]): void {
    const seen = new Set<string>();
    for (const item of items) {
      const id = item.participant.participantId;
      seen.add(id);
      let tile = this.tiles.get(id);
      if (!tile) {
        tile = new ParticipantTile(id, item.isSelf, this.actions);
        tile.el.setAttribute("role", "listitem");
        this.tiles.set(id, tile);
        this.el.append(tile.el);
      }
      tile.update(item);
      tile.el.style.order = item.pinned ? "-1" : "0";
    }
    for (const [id, tile] of this.tiles) {
      if (!seen.has(id)) {
        tile.dispose();
        tile.el.remove();
        this.tiles.delete(id);
      }
    }
    this.el.dataset["count"] = String(this.tiles.size);
  }

  dispose(): void {
    for (const tile of this.tiles.values()) tile.dispose();
    this.tiles.clear();
  }
}
