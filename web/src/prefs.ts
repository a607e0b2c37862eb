// Choices remembered on this device (localStorage): devices, languages, caption size. Kept
// per signed-in principal: two people sharing a browser never get each other's languages or
// devices (nor a guest those of the account it shares a browser with).

export interface Prefs {
  cameraId: string;
  microphoneId: string;
  speakerId: string;
  spokenLanguage: string;
  captionLanguage: string;
  captionSize: "small" | "medium" | "large";
  joinMuted: boolean;
  joinCameraOff: boolean;
}

const KEY = "meeshy.prefs";
/** Whose choices are read and written: the signed-in principal (null: nobody yet). */
let owner: string | null = null;

/** Choices are read and saved for this principal from now on (null on sign-out). */
export function setPrefsOwner(principalId: string | null): void {
  owner = principalId;
}

/** The storage key of one principal's choices (before sign-in: a key of its own). */
export function prefsKey(principalId: string | null = owner): string {
  return principalId ? `${KEY}:${encodeURIComponent(principalId)}` : `${KEY}:anonymous`;
}

const DEFAULTS: Prefs = {
  cameraId: "",
  microphoneId: "",
  speakerId: "",
  spokenLanguage: "",
  captionLanguage: "",
  captionSize: "medium",
  joinMuted: false,
  joinCameraOff: false,
};

export const LANGUAGES: ReadonlyArray<{ value: string; label: string }> = [
  { value: "en", label: "English" },
  { value: "fr", label: "Français" },
  { value: "es", label: "Español" },
  { value: "de", label: "Deutsch" },
  { value: "it", label: "Italiano" },
  { value: "pt", label: "Português" },
  { value: "ca", label: "Català" },
  { value: "nl", label: "Nederlands" },
];

export function languageName(code: string): string {
  return LANGUAGES.find((l) => l.value === code)?.label ?? code;
}

export function loadPrefs(): Prefs {
  try {
    const raw = localStorage.getItem(prefsKey());
    const parsed: unknown = raw ? JSON.parse(raw) : {};
    return { ...DEFAULTS, ...(parsed && typeof parsed === "object" ? parsed : {}) };
  } catch {
    return { ...DEFAULTS };
  }
}

export function savePrefs(change: Partial<Prefs>): Prefs {
  const next = { ...loadPrefs(), ...change };
  try {
    localStorage.setItem(prefsKey(), JSON.stringify(next));
  } catch {
    // Private mode or a full quota: the choice holds for this page only.
  }
  return next;
}
