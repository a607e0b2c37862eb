// The browser's own speech recognition (Web Speech API) turned into `call:transcription`
// messages: one utterance per recognition result, interim revisions, then the final. Where
// it cannot work (offline, no service, the language not supported) it says so once through
// `onUnavailable` and the captions fall back to the audio-only uplink.

/** The parts of the Web Speech API we use (not in TypeScript's DOM library). */
interface RecognitionAlternative {
  transcript: string;
}
interface RecognitionResult {
  readonly isFinal: boolean;
  readonly length: number;
  [index: number]: RecognitionAlternative | undefined;
}
interface RecognitionEvent extends Event {
  readonly resultIndex: number;
  readonly results: { readonly length: number; [index: number]: RecognitionResult | undefined };
}
interface RecognitionErrorEvent extends Event {
  readonly error: string;
}
interface Recognition extends EventTarget {
  lang: string;
  continuous: boolean;
  interimResults: boolean;
  start(): void;
  stop(): void;
  abort(): void;
  onresult: ((ev: RecognitionEvent) => void) | null;
  onerror: ((ev: RecognitionErrorEvent) => void) | null;
  onend: (() => void) | null;
}
type RecognitionCtor = new () => Recognition;

export interface Transcribed {
  utteranceId: string;
  text: string;
  isFinal: boolean;
  revision: number;
  language: string;
}

/** Errors after which recognition cannot work here: fall back to the server. */
const FATAL = new Set(["network", "audio-capture", "not-allowed", "service-not-allowed", "language-not-supported", "bad-grammar"]);
/** Interim revisions of one utterance go out at most this often. */
const INTERIM_EVERY_MS = 300;
/** `call:transcription` text is at most this many characters (docs/socket-protocol.md). */
export const MAX_TEXT = 2_000;

/**
 * A recognition result as the gateway takes it: at most `max` characters (code points, as
 * the gateway counts them; never half a surrogate pair). A longer result keeps its newest
 * words, from a word boundary, after an ellipsis: live captions show what is being said now.
 */
export function capText(text: string, max = MAX_TEXT): string {
  const chars = Array.from(text);
  if (chars.length <= max) return text;
  let tail = chars.slice(chars.length - (max - 1)).join("");
  const space = tail.search(/\s/);
  if (space >= 0 && space < 200) tail = tail.slice(space).trimStart();
  return `…${tail}`;
}

function ctor(): RecognitionCtor | null {
  const w = window as unknown as { SpeechRecognition?: RecognitionCtor; webkitSpeechRecognition?: RecognitionCtor };
  return w.SpeechRecognition ?? w.webkitSpeechRecognition ?? null;
}

export class SpeechTranscriber {
  private recognition: Recognition | null = null;
  private running = false;
  private session = Math.random().toString(36).slice(2, 8);
  private counter = 0;
  private readonly revisions = new Map<number, { revision: number; sentAt: number; id: string }>();

  static available(): boolean {
    return ctor() !== null;
  }

  constructor(
    private language: string,
    private readonly onText: (t: Transcribed) => void,
    private readonly onUnavailable: (reason: string) => void,
  ) {}

  start(): void {
    if (this.running) return;
    const Ctor = ctor();
    if (!Ctor) {
      this.onUnavailable("this browser has no speech recognition");
      return;
    }
    this.running = true;
    this.begin(Ctor);
  }

  private begin(Ctor: RecognitionCtor): void {
    const r = new Ctor();
    r.lang = this.language;
    r.continuous = true;
    r.interimResults = true;
    // Each recognition session numbers its results from 0: give them utterance ids of their own.
    this.session = Math.random().toString(36).slice(2, 8);
    this.revisions.clear();
    r.onresult = (ev) => this.results(ev);
    r.onerror = (ev) => {
      if (FATAL.has(ev.error)) {
        this.running = false;
        this.onUnavailable(ev.error);
      }
    };
    r.onend = () => {
      // Recognition stops by itself after a silence: keep listening while wanted.
      if (this.running && this.recognition === r) this.begin(Ctor);
    };
    this.recognition = r;
    try {
      r.start();
    } catch (err) {
      this.running = false;
      this.onUnavailable(err instanceof Error ? err.message : "could not start");
    }
  }

  private results(ev: RecognitionEvent): void {
    const now = performance.now();
    for (let i = ev.resultIndex; i < ev.results.length; i++) {
      const result = ev.results[i];
      const text = capText(result?.[0]?.transcript.trim() ?? "");
      if (!result || !text) continue;
      let entry = this.revisions.get(i);
      if (!entry) {
        entry = { revision: -1, sentAt: -Infinity, id: `ws-${this.session}-${this.counter++}` };
        this.revisions.set(i, entry);
      }
      if (!result.isFinal && now - entry.sentAt < INTERIM_EVERY_MS) continue;
      entry.revision += 1;
      entry.sentAt = now;
      this.onText({ utteranceId: entry.id, text, isFinal: result.isFinal, revision: entry.revision, language: this.language });
    }
  }

  setLanguage(language: string): void {
    if (language === this.language) return;
    this.language = language;
    if (this.running) {
      this.stop();
      this.start();
    }
  }

  stop(): void {
    this.running = false;
    const r = this.recognition;
    this.recognition = null;
    if (r) {
      try {
        r.abort();
      } catch {
        // already stopped
      }
    }
  }
}
