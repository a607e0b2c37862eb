// Captions of the call, one line per utterance: interim text replaced in place by later
// revisions and then by the final text. A final can itself be revised by a continuation
// (same utteranceId, higher revision: the transcriber heard more of the sentence), so any
// higher revision replaces the line; a final is announced to screen readers once per text
// (a repeated or identical final is not read out again). Fed by `call:caption`.

import type { CaptionEvent } from "../protocol";

export interface CaptionLine {
  utteranceId: string;
  speakerId: string;
  speakerName: string;
  /** In the listener's language. */
  text: string;
  /** What the speaker said, in their language (shown beside a translation). */
  sourceText: string;
  sourceLanguage: string;
  language: string;
  translated: boolean;
  isFinal: boolean;
  revision: number;
  /** The listener's own words. */
  own: boolean;
  /** The final text last announced to screen readers for this line (null: none yet). */
  announced: string | null;
  /** The store's version when this line last changed: the order captions arrived in. */
  seq: number;
}

export const MAX_LINES = 60;

export class CaptionStore {
  lines: CaptionLine[] = [];
  /** Bumped on every change (the panel re-renders when it moves). */
  version = 0;

  /** Utterances whose latest revision said nothing (Whisper heard no words): the
   * revision, so an older one arriving late does not bring the line back. */
  private emptied = new Map<string, number>();

  apply(
    ev: CaptionEvent,
    nameOf: (participantId: string) => string,
    selfId: string,
  ): { changed: boolean; announce: string | null } {
    const i = this.lines.findIndex((l) => l.utteranceId === ev.utteranceId);
    const existing = i >= 0 ? this.lines[i] : undefined;
    const gone = this.emptied.get(ev.utteranceId);
    if ((existing && ev.revision <= existing.revision) || (gone !== undefined && ev.revision <= gone)) {
      // Out of order or repeated: the line already says as much or more.
      return { changed: false, announce: null };
    }
    if (!ev.text.trim()) {
      // Nothing was said after all: no empty line on screen (and none announced).
      this.emptied.set(ev.utteranceId, ev.revision);
      if (this.emptied.size > MAX_LINES * 4) {
        const oldest = this.emptied.keys().next().value;
        if (oldest !== undefined) this.emptied.delete(oldest);
      }
      if (existing) {
        this.lines.splice(i, 1);
        this.version += 1;
        return { changed: true, announce: null };
      }
      return { changed: false, announce: null };
    }
    const own = ev.speakerParticipantId === selfId;
    const line: CaptionLine = {
      utteranceId: ev.utteranceId,
      speakerId: ev.speakerParticipantId,
      speakerName: own ? "You" : nameOf(ev.speakerParticipantId) || "Someone",
      text: ev.text,
      sourceText: ev.sourceText,
      sourceLanguage: ev.sourceLanguage,
      language: ev.language,
      translated: ev.translated,
      isFinal: ev.isFinal,
      revision: ev.revision,
      own,
      announced: existing?.announced ?? null,
      seq: this.version + 1,
    };
    if (existing) this.lines[i] = line;
    else this.lines.push(line);
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
    this.version += 1;
    let announce: string | null = null;
    if (line.isFinal && !own && line.text.trim() && line.text !== line.announced) {
      announce = `${line.speakerName}: ${line.text}`;
      line.announced = line.text;
    }
    return { changed: true, announce };
  }

  clear(): void {
    this.lines = [];
    this.version += 1;
  }
}
