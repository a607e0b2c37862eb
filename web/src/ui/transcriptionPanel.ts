// The captions panel: one line per utterance (speaker, text in the chosen language, the
// original beside a translation), a remembered text size; finals are announced once through
// the page's live region (the list itself is not live, so nothing is read twice).

import { field, h, select } from "../dom";
import type { CaptionLine } from "../captions/captionStore";
import { languageName, loadPrefs, savePrefs } from "../prefs";

const SIZES = [
  { value: "small", label: "Small" },
  { value: "medium", label: "Medium" },
  { value: "large", label: "Large" },
] as const;

export class TranscriptionPanel {
  readonly el: HTMLElement;
  private readonly list: HTMLElement;
  private readonly empty: HTMLElement;
  private showOriginal = true;

  constructor() {
    const prefs = loadPrefs();
    const size = select({ name: "captionSize" }, SIZES, prefs.captionSize);
    const original = h("input", { type: "checkbox", name: "showOriginal", checked: true });
    this.list = h("ol", { class: "caption-list" });
    this.empty = h("p", { class: "caption-empty" }, "Captions appear here while the call is transcribed.");
    this.el = h(
      "aside",
      { id: "captions-panel", class: `captions-panel size-${prefs.captionSize}`, "aria-label": "Captions", hidden: true },
      h("h2", {}, "Captions"),
      h("div", { class: "caption-settings" }, field("Text size", size), h("label", {}, original, " Show the original beside translations")),
      this.empty,
      this.list,
    );
    size.addEventListener("change", () => {
      const value = size.value as "small" | "medium" | "large";
      savePrefs({ captionSize: value });
      this.el.classList.remove("size-small", "size-medium", "size-large");
      this.el.classList.add(`size-${value}`);
    });
    original.addEventListener("change", () => {
      this.showOriginal = original.checked;
      this.el.classList.toggle("hide-original", !this.showOriginal);
    });
  }

  set open(on: boolean) {
    this.el.hidden = !on;
  }

  get open(): boolean {
    return !this.el.hidden;
  }

  update(lines: readonly CaptionLine[]): void {
    this.empty.hidden = lines.length > 0;
    this.list.replaceChildren(
      ...lines.map((l) =>
        h(
          "li",
          {
            class: `caption${l.isFinal ? "" : " interim"}${l.own ? " own" : ""}`,
            "data-utterance-id": l.utteranceId,
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
  }
}
