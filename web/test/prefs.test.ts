import assert from "node:assert/strict";
import { test } from "node:test";

const store = new Map<string, string>();
(globalThis as unknown as Record<string, unknown>).localStorage = {
  getItem: (k: string) => store.get(k) ?? null,
  setItem: (k: string, v: string) => void store.set(k, v),
  removeItem: (k: string) => void store.delete(k),
};
const { loadPrefs, prefsKey, savePrefs, setPrefsOwner } = await import("../src/prefs");

test("two people in one browser keep their own languages and devices", () => {
  setPrefsOwner("u-alice");
  savePrefs({ spokenLanguage: "en", captionLanguage: "es", cameraId: "cam-a" });
  setPrefsOwner("u-bob");
  assert.deepEqual([loadPrefs().spokenLanguage, loadPrefs().captionLanguage, loadPrefs().cameraId], ["", "", ""], "bob starts from the defaults");
  savePrefs({ captionLanguage: "fr", microphoneId: "mic-b" });
  setPrefsOwner("u-alice");
  assert.deepEqual([loadPrefs().captionLanguage, loadPrefs().cameraId, loadPrefs().microphoneId], ["es", "cam-a", ""]);
  setPrefsOwner(null);
  assert.equal(loadPrefs().captionLanguage, "", "signed out: nobody's choices");
  assert.notEqual(prefsKey("a:b"), prefsKey("a"), "ids are encoded, never confused");
});
