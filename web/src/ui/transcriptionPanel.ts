// The captions panel: transcription on or off for the whole call, the languages I read and
// speak (they take effect at once), one line per utterance (speaker, text in my language,
// the original beside a translation; my own words marked), a remembered text size. Finals
// are announced once through the page's live region (the list itself is not live, so nothing
// is read twice).

import type { OwnSource } from "../captions/captionsController";
import type { CaptionLine } from "../captions/captionStore";
import { field, h, select } from "../dom";
import { LANGUAGES, languageName, loadPrefs, savePrefs } from "../prefs";

const SIZES = [
  { value: "small", label: "Small" },
  { value: "medium", label: "Medium" },
  { value: "large", label: "Large" },
] as const;

export interface PanelState {
  lines: readonly CaptionLine[];
  /** The caption store's version (re-render only when it moved). */
  version: number;
  enabled: boolean;
  captionLanguage: string;
  spokenLanguage: string;
  source: OwnSource;
}

export interface PanelActions {
  setTranscription(on: boolean): void;
  setCaptionLanguage(language: string): void;
  setSpokenLanguage(language: string): void;
}

const SOURCE_TEXT: Record<OwnSource, string> = {
  off: "",
  browser: "Your words are transcribed by this browser.",
  uplink: "Your words are transcribed by the media server (your microphone only; video stays peer-to-peer).",
  "media-server": "Your words are transcribed by the media server.",
  unavailable: "Your own words cannot be captioned right now.",
};

export class TranscriptionPanel {
  readonly el: HTMLElement;
  private readonly list: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly toggle: HTMLButtonElement;
  private readonly reading: HTMLSelectElement;
  private readonly speaking: HTMLSelectElement;
  private readonly sourceLine: HTMLElement;
  private renderedVersion = -1;

  constructor(actions: PanelActions) {
    const prefs = loadPrefs();
    const size = select({ name: "captionSize" }, SIZES, prefs.captionSize);
    const original = h("input", { type: "checkbox", name: "showOriginal", checked: true });
    this.toggle = h("button", { type: "button", class: "transcription-toggle" }, "Transcribe the call");
    this.toggle.addEventListener("click", () => actions.setTranscription(this.toggle.getAttribute("aria-pressed") !== "true"));
    this.reading = select({ name: "readLanguage" }, LANGUAGES, "");
    this.speaking = select({ name: "speakLanguage" }, LANGUAGES, "");
    this.reading.addEventListener("change", () => {
      savePrefs({ captionLanguage: this.reading.value });
      actions.setCaptionLanguage(this.reading.value);
    });
    this.speaking.addEventListener("change", () => {
      savePrefs({ spokenLanguage: this.speaking.value });
      actions.setSpokenLanguage(this.speaking.value);
    });
    this.sourceLine = h("p", { class: "hint caption-source" });
    this.list = h("ol", { class: "caption-list" });
    this.empty = h("p", { class: "caption-empty" });
    this.el = h(
      "aside",
      { id: "captions-panel", class: `captions-panel size-${prefs.captionSize}`, "aria-label": "Captions", hidden: true },
      h("h2", {}, "Captions"),
      h("div", { class: "caption-settings" }, this.toggle, field("Captions in", this.reading), field("I speak", this.speaking)),
      this.sourceLine,
      this.empty,
      this.list,
      h("details", { class: "caption-display" }, h("summary", {}, "Display"), field("Text size", size), h("label", {}, original, " Show the original beside translations")),
    );
    size.addEventListener("change", () => {
      const value = size.value as "small" | "medium" | "large";
      savePrefs({ captionSize: value });
      this.el.classList.remove("size-small", "size-medium", "size-large");
      this.el.classList.add(`size-${value}`);
    });
    original.addEventListener("change", () => {
      this.el.classList.toggle("hide-original", !original.checked);
    });
  }

  set open(on: boolean) {
    this.el.hidden = !on;
  }

  get open(): boolean {
    return !this.el.hidden;
  }

  update(s: PanelState): void {
    this.toggle.setAttribute("aria-pressed", String(s.enabled));
    this.toggle.title = s.enabled ? "Captions are on for everyone in the call" : "Captions are off for everyone in the call";
    // Not while the person is choosing (a re-render would close the list under them).
    if (document.activeElement !== this.reading) this.reading.value = s.captionLanguage;
    if (document.activeElement !== this.speaking) this.speaking.value = s.spokenLanguage;
    this.sourceLine.textContent = s.enabled ? SOURCE_TEXT[s.source] : "";
    this.empty.hidden = s.lines.length > 0;
    this.empty.textContent = s.enabled
      ? `Captions appear here in ${languageName(s.captionLanguage)} as people speak.`
      : "Captions are off for this call. Turn on transcription to see them (everyone in the call will).";
    if (s.version === this.renderedVersion) return;
    this.renderedVersion = s.version;
    this.list.replaceChildren(
      ...s.lines.map((l) =>
        h(
          "li",
          {
            class: `caption${l.isFinal ? "" : " interim"}${l.own ? " own" : ""}`,
            "data-utterance-id": l.utteranceId,
            "data-language": l.language,
            "data-final": l.isFinal ? "true" : "false",
            "data-revision": String(l.revision),
            "data-seq": String(l.seq),
            lang: l.language,
          },
          h("span", { class: "speaker" }, `${l.speakerName}: `),
          h("span", { class: "text" }, l.text),
          l.translated && l.sourceText
            ? h("span", { class: "original", lang: l.sourceLanguage }, ` (${languageName(l.sourceLanguage)}: ${l.sourceText})`)
            : null,
        ),
      ),
    );
    this.el.scrollTop = this.el.scrollHeight;
  }
}
