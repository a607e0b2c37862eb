// One participant in the grid: video (or initials), name, guest badge, muted / camera-off,
// active speaker highlight, "reconnecting", and connection figures from getStats.

import { h } from "../dom";
import { formatStats, type LinkStats } from "../media/stats";
import type { ParticipantView } from "../protocol";

export interface TileData {
  participant: ParticipantView;
  isSelf: boolean;
  stream: MediaStream | null;
  speaking: boolean;
  /** This side's own socket is away (self tile), or the remote media path state. */
  reconnecting: boolean;
  ice: string;
  stats: LinkStats | null;
  sinkId: string;
}

export class ParticipantTile {
  readonly el: HTMLElement;
  private readonly video: HTMLVideoElement;
  private readonly avatar: HTMLElement;
  private readonly name: HTMLElement;
  private readonly badges: HTMLElement;
  private readonly overlay: HTMLElement;
  private readonly statsLine: HTMLElement;
  private stream: MediaStream | null = null;
  private sinkId = "";

  constructor(readonly participantId: string, isSelf: boolean) {
    this.video = h("video", { autoplay: true, playsinline: true });
    this.video.muted = isSelf;
    if (isSelf) this.video.classList.add("mirror");
    this.avatar = h("div", { class: "avatar", "aria-hidden": "true" });
    this.name = h("span", { class: "name" });
    this.badges = h("span", { class: "badges" });
    this.overlay = h("div", { class: "tile-overlay", role: "status" });
    this.statsLine = h("div", { class: "tile-stats" });
    this.el = h(
      "figure",
      { class: "tile", "data-participant-id": participantId, "data-self": isSelf ? "true" : "false" },
      this.video,
      this.avatar,
      this.overlay,
      h("figcaption", {}, this.name, this.badges),
      isSelf ? null : this.statsLine,
    );
  }

  update(d: TileData): void {
    const p = d.participant;
    const label = d.isSelf ? `${p.displayName} (you)` : p.displayName;
    this.name.textContent = label;
    this.el.setAttribute("aria-label", label);
    this.el.dataset["audio"] = p.audioEnabled ? "on" : "off";
    this.el.dataset["video"] = p.videoEnabled ? "on" : "off";
    this.el.dataset["connection"] = d.reconnecting ? "reconnecting" : "connected";
    this.el.dataset["ice"] = d.ice;
    this.el.classList.toggle("speaking", d.speaking);
    this.el.dataset["speaking"] = d.speaking ? "true" : "false";
    const badges: HTMLElement[] = [];
    if (p.kind === "guest") badges.push(h("span", { class: "badge guest" }, "Guest"));
    if (!p.audioEnabled) badges.push(h("span", { class: "badge muted", title: "Microphone off" }, "Muted"));
    if (!p.videoEnabled) badges.push(h("span", { class: "badge camera-off", title: "Camera off" }, "Camera off"));
    if (d.speaking) badges.push(h("span", { class: "badge speaking-badge" }, "Speaking"));
    this.badges.replaceChildren(...badges);
    this.avatar.textContent = initials(p.displayName);
    const showVideo = p.videoEnabled && d.stream !== null && d.stream.getVideoTracks().length > 0;
    this.video.classList.toggle("hidden-video", !showVideo);
    this.avatar.hidden = showVideo;
    if (d.stream !== this.stream) {
      this.stream = d.stream;
      this.video.srcObject = d.stream;
      if (d.stream) void this.video.play().catch(() => undefined);
    }
    if (!d.isSelf && d.sinkId !== this.sinkId && "setSinkId" in this.video) {
      this.sinkId = d.sinkId;
      void (this.video as HTMLVideoElement & { setSinkId(id: string): Promise<void> }).setSinkId(d.sinkId).catch(() => undefined);
    }
    let overlay = "";
    if (d.reconnecting) overlay = "Reconnecting…";
    else if (!d.isSelf && d.stream === null) overlay = "Connecting…";
    this.overlay.textContent = overlay;
    this.overlay.hidden = overlay === "";
    if (!d.isSelf) {
      this.el.dataset["framesDecoded"] = String(d.stats?.framesDecoded ?? 0);
      this.statsLine.textContent = d.stats ? formatStats(d.stats) : "";
      this.statsLine.setAttribute("aria-label", d.stats ? `Connection: ${formatStats(d.stats)}` : "Connection figures pending");
    }
  }

  /** Frames the <video> element has presented (what the person actually sees). */
  get presentedFrames(): number {
    return this.video.getVideoPlaybackQuality?.().totalVideoFrames ?? 0;
  }
}

function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  return (parts.map((p) => p[0] ?? "").join("").slice(0, 2) || "?").toUpperCase();
}
