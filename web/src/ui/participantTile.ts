// One participant in the grid: video (or initials), name, guest badge, muted / camera-off,
// active speaker highlight, "reconnecting", a pin, and connection figures from getStats.
// Remote sound plays elsewhere (one audio element per path, see RemoteFeeds): the tile's
// <video> is always muted, so a path change never doubles or cuts a voice.

import { h } from "../dom";
import { formatStats, type LinkStats } from "../media/stats";
import type { ParticipantView } from "../protocol";

export interface TileData {
  participant: ParticipantView;
  isSelf: boolean;
  stream: MediaStream | null;
  speaking: boolean;
  /** This side's own socket is away (self tile), or the participant is reconnecting. */
  reconnecting: boolean;
  /** The remote media path state ("connected", "checking", ...). */
  ice: string;
  /** Which path carries their video now: "p2p", "sfu", or "" (none yet). */
  path: string;
  stats: LinkStats | null;
  /** Video frames decoded for them since the call began (every path together). */
  framesDecoded: number;
  pinned: boolean;
}

export interface TileActions {
  togglePin(participantId: string): void;
  /** A frame of this participant's video was presented (for the longest-gap figure). */
  framePresented(participantId: string, atMs: number): void;
}

type FrameCallbackVideo = HTMLVideoElement & {
  requestVideoFrameCallback?(cb: (now: number) => void): number;
  cancelVideoFrameCallback?(handle: number): void;
};

export class ParticipantTile {
  readonly el: HTMLElement;
  private readonly video: FrameCallbackVideo;
  private readonly avatar: HTMLElement;
  private readonly name: HTMLElement;
  private readonly badges: HTMLElement;
  private readonly overlay: HTMLElement;
  private readonly statsLine: HTMLElement;
  private readonly pin: HTMLButtonElement | null;
  private stream: MediaStream | null = null;
  private shownTrack: MediaStreamTrack | null = null;
  private presented = 0;
  /** Times the tile lost its video while the camera was on (a path change done wrong). */
  private losses = 0;
  private frameHandle: number | null = null;
  private lastFrameAt = 0;

  constructor(
    readonly participantId: string,
    private readonly isSelf: boolean,
    private readonly actions: TileActions,
  ) {
    this.video = h("video", { autoplay: true, playsinline: true });
    this.video.muted = true;
    if (isSelf) this.video.classList.add("mirror");
    this.avatar = h("div", { class: "avatar", "aria-hidden": "true" });
    this.name = h("span", { class: "name" });
    this.badges = h("span", { class: "badges" });
    this.overlay = h("div", { class: "tile-overlay", role: "status" });
    this.statsLine = h("div", { class: "tile-stats" });
    this.pin = isSelf ? null : h("button", { type: "button", class: "pin", onclick: () => this.actions.togglePin(this.participantId) }, "Pin");
    this.el = h(
      "figure",
      { class: "tile", "data-participant-id": participantId, "data-self": isSelf ? "true" : "false" },
      this.video,
      this.avatar,
      this.overlay,
      h("figcaption", {}, this.name, this.badges),
      isSelf ? null : this.statsLine,
      this.pin,
    );
    this.video.addEventListener("playing", () => this.watchFrames());
  }

  /** Count presented frames across every source this tile ever shows (what the person saw). */
  private watchFrames(): void {
    const v = this.video;
    if (!v.requestVideoFrameCallback || this.frameHandle !== null) return;
    const onFrame = (now: number) => {
      this.frameHandle = null;
      this.presented += 1;
      this.lastFrameAt = now;
      this.el.dataset["framesPresented"] = String(this.presented);
      if (!this.isSelf) this.actions.framePresented(this.participantId, now);
      if (v.isConnected) this.frameHandle = v.requestVideoFrameCallback?.(onFrame) ?? null;
    };
    this.frameHandle = v.requestVideoFrameCallback(onFrame);
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
    this.el.dataset["path"] = d.path;
    this.el.classList.toggle("speaking", d.speaking);
    this.el.classList.toggle("pinned", d.pinned);
    this.el.dataset["speaking"] = d.speaking ? "true" : "false";
    const badges: HTMLElement[] = [];
    if (p.kind === "guest") badges.push(h("span", { class: "badge guest" }, "Guest"));
    if (!p.audioEnabled) badges.push(h("span", { class: "badge muted", title: "Microphone off" }, "Muted"));
    if (!p.videoEnabled) badges.push(h("span", { class: "badge camera-off", title: "Camera off" }, "Camera off"));
    if (d.speaking) badges.push(h("span", { class: "badge speaking-badge" }, "Speaking"));
    this.badges.replaceChildren(...badges);
    this.avatar.textContent = initials(p.displayName);
    const track = d.stream?.getVideoTracks()[0] ?? null;
    if (this.shownTrack && !track && p.videoEnabled && !d.isSelf) {
      this.losses += 1;
      this.el.dataset["videoLosses"] = String(this.losses);
    }
    const showVideo = p.videoEnabled && track !== null;
    this.video.classList.toggle("hidden-video", !showVideo);
    this.avatar.hidden = showVideo;
    if (d.stream !== this.stream || track !== this.shownTrack) {
      // Another path or slot carries them now: reload the element on the same stream.
      this.stream = d.stream;
      this.shownTrack = track;
      this.video.srcObject = d.stream;
      if (d.stream) void this.video.play().catch(() => undefined);
    } else if (track && this.video.paused && this.video.isConnected) {
      void this.video.play().catch(() => undefined);
    }
    if (track && this.frameHandle === null && performance.now() - this.lastFrameAt > 1_000) this.watchFrames();
    if (this.pin) {
      this.pin.setAttribute("aria-pressed", String(d.pinned));
      this.pin.setAttribute("aria-label", `${d.pinned ? "Unpin" : "Pin"} ${p.displayName}`);
      this.pin.textContent = d.pinned ? "Unpin" : "Pin";
    }
    let overlay = "";
    if (d.reconnecting) overlay = "Reconnecting…";
    else if (!d.isSelf && d.path === "") overlay = "Connecting…";
    this.overlay.textContent = overlay;
    this.overlay.hidden = overlay === "";
    if (!d.isSelf) {
      this.el.dataset["framesDecoded"] = String(d.framesDecoded);
      this.statsLine.textContent = d.stats ? `${d.path.toUpperCase()} · ${formatStats(d.stats)}` : "";
      this.statsLine.setAttribute("aria-label", d.stats ? `Connection: ${formatStats(d.stats)}` : "Connection figures pending");
    }
  }

  /** Frames the <video> element has presented (what the person actually sees). */
  get presentedFrames(): number {
    return this.presented;
  }

  dispose(): void {
    if (this.frameHandle !== null) this.video.cancelVideoFrameCallback?.(this.frameHandle);
    this.frameHandle = null;
    this.video.srcObject = null;
  }
}

function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  return (parts.map((p) => p[0] ?? "").join("").slice(0, 2) || "?").toUpperCase();
}
