// The call's controls: microphone, camera, screen share, captions, share link, leave, end.
// Toggle buttons keep one name and say their state with aria-pressed.

import { h } from "../dom";

export interface ControlsState {
  audioOn: boolean;
  videoOn: boolean;
  hasAudio: boolean;
  hasVideo: boolean;
  sharing: boolean;
  captionsOpen: boolean;
  canShareLink: boolean;
  canEndForAll: boolean;
  direct: boolean;
}

export interface ControlsActions {
  toggleAudio(): void;
  toggleVideo(): void;
  toggleScreen(): void;
  toggleCaptions(): void;
  shareLink(): void;
  leave(): void;
  endForAll(): void;
}

export class CallControls {
  readonly el: HTMLElement;
  private readonly mic: HTMLButtonElement;
  private readonly cam: HTMLButtonElement;
  private readonly screen: HTMLButtonElement;
  private readonly captions: HTMLButtonElement;
  private readonly link: HTMLButtonElement;
  private readonly leaveBtn: HTMLButtonElement;
  private readonly end: HTMLButtonElement;

  constructor(actions: ControlsActions) {
    const button = (cls: string, label: string, onclick: () => void) =>
      h("button", { type: "button", class: `control ${cls}`, onclick }, label);
    this.mic = button("mic", "Mute microphone", () => actions.toggleAudio());
    this.cam = button("cam", "Turn camera off", () => actions.toggleVideo());
    this.screen = button("screen", "Share screen", () => actions.toggleScreen());
    this.captions = button("captions", "Captions", () => actions.toggleCaptions());
    this.captions.setAttribute("aria-controls", "captions-panel");
    this.link = button("share-link", "Copy share link", () => actions.shareLink());
    this.leaveBtn = button("leave danger", "Leave call", () => actions.leave());
    this.end = button("end danger", "End call for everyone", () => actions.endForAll());
    this.el = h(
      "div",
      { class: "call-controls", role: "group", "aria-label": "Call controls" },
      this.mic,
      this.cam,
      this.screen,
      this.captions,
      this.link,
      this.leaveBtn,
      this.end,
    );
  }

  update(s: ControlsState): void {
    this.mic.setAttribute("aria-pressed", String(!s.audioOn));
    this.mic.disabled = !s.hasAudio;
    this.mic.title = s.audioOn ? "Your microphone is on" : "Your microphone is off";
    this.cam.setAttribute("aria-pressed", String(!s.videoOn));
    this.cam.disabled = !s.hasVideo;
    this.cam.title = s.videoOn ? "Your camera is on" : "Your camera is off";
    this.screen.setAttribute("aria-pressed", String(s.sharing));
    this.captions.setAttribute("aria-expanded", String(s.captionsOpen));
    this.link.hidden = !s.canShareLink;
    this.end.hidden = !s.canEndForAll;
    this.leaveBtn.textContent = s.direct ? "Hang up" : "Leave call";
  }
}
