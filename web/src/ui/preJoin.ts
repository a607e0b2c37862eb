// Pre-join: camera preview, microphone level, device choice, spoken and caption language,
// join muted or with the camera off. The LocalMedia acquired here is the one the call uses.

import { field, h, select } from "../dom";
import { toAppError } from "../errors";
import { LevelMeter } from "../media/levelMeter";
import { LocalMedia, listDevices } from "../media/localMedia";
import { LANGUAGES, loadPrefs, savePrefs, type Prefs } from "../prefs";
import { errorBox, heading, type Screen } from "./screen";

export interface PreJoinOptions {
  title: string;
  action: string;
  defaultLanguage: string;
  join(local: LocalMedia, prefs: Prefs): Promise<void>;
  cancel(): void;
}

export function preJoinScreen(opts: PreJoinOptions): Screen {
  let local: LocalMedia | null = null;
  let meter: LevelMeter | null = null;
  let handedOver = false;
  return {
    name: "pre-join",
    title: opts.title,
    render(root) {
      const prefs = loadPrefs();
      const video = h("video", { class: "preview", autoplay: true, playsinline: true, "aria-label": "Your camera preview" });
      video.muted = true;
      const level = h("meter", { min: 0, max: 1, low: 0.05, high: 0.8, optimum: 0.5, value: 0 });
      const warning = h("div", { class: "media-warning" });
      const camera = h("select", { name: "camera" });
      const microphone = h("select", { name: "microphone" });
      const spoken = select({ name: "spokenLanguage" }, LANGUAGES, prefs.spokenLanguage || opts.defaultLanguage);
      const captions = select({ name: "captionLanguage" }, LANGUAGES, prefs.captionLanguage || opts.defaultLanguage);
      const muted = h("input", { type: "checkbox", name: "joinMuted" });
      muted.checked = prefs.joinMuted;
      const cameraOff = h("input", { type: "checkbox", name: "joinCameraOff" });
      cameraOff.checked = prefs.joinCameraOff;
      const go = h("button", { type: "button", class: "primary", disabled: true }, opts.action);
      const cancel = h("button", { type: "button", onclick: () => opts.cancel() }, "Cancel");
      const status = h("div", { class: "form-status", "aria-live": "polite" }, h("p", {}, "Starting your camera and microphone…"));

      const fillDevices = async () => {
        const { cameras, microphones } = await listDevices();
        const opt = (d: MediaDeviceInfo, i: number, what: string) => ({ value: d.deviceId, label: d.label || `${what} ${i + 1}` });
        const currentCam = local?.cameraTrack?.getSettings().deviceId ?? prefs.cameraId;
        const currentMic = local?.audioTrack?.getSettings().deviceId ?? prefs.microphoneId;
        camera.replaceChildren(...cameras.map((d, i) => option(opt(d, i, "Camera"), currentCam)));
        microphone.replaceChildren(...microphones.map((d, i) => option(opt(d, i, "Microphone"), currentMic)));
        camera.disabled = cameras.length === 0 || !local?.hasVideo;
        microphone.disabled = microphones.length === 0 || !local?.hasAudio;
      };
      const watchLevel = () => {
        meter?.close();
        meter = null;
        const track = local?.audioTrack;
        if (!track) return;
        try {
          meter = new LevelMeter(track);
          meter.watch((v) => {
            level.value = muted.checked ? 0 : v;
          });
        } catch {
          meter = null;
        }
      };
      camera.addEventListener("change", () => {
        if (!local) return;
        local
          .switchDevice("video", camera.value)
          .then(() => {
            savePrefs({ cameraId: camera.value });
            video.srcObject = local?.stream ?? null;
          })
          .catch((err: unknown) => warning.replaceChildren(errorBox(toAppError(err).readable)));
      });
      microphone.addEventListener("change", () => {
        if (!local) return;
        local
          .switchDevice("audio", microphone.value)
          .then(() => {
            savePrefs({ microphoneId: microphone.value });
            watchLevel();
          })
          .catch((err: unknown) => warning.replaceChildren(errorBox(toAppError(err).readable)));
      });
      cameraOff.addEventListener("change", () => {
        video.classList.toggle("off", cameraOff.checked);
      });
      go.addEventListener("click", () => {
        if (!local) return;
        go.disabled = true;
        const chosen = savePrefs({
          spokenLanguage: spoken.value,
          captionLanguage: captions.value,
          joinMuted: muted.checked,
          joinCameraOff: cameraOff.checked,
        });
        local.setAudioEnabled(!muted.checked);
        local.setVideoEnabled(!cameraOff.checked);
        status.replaceChildren(h("p", {}, "Joining…"));
        handedOver = true;
        meter?.close();
        meter = null;
        opts.join(local, chosen).catch((err: unknown) => {
          handedOver = false;
          watchLevel();
          status.replaceChildren(errorBox(toAppError(err).readable));
          go.disabled = false;
        });
      });

      root.append(
        h(
          "section",
          { class: "screen prejoin" },
          heading(opts.title),
          h(
            "div",
            { class: "prejoin-grid" },
            h("div", { class: "preview-box" }, video, field("Microphone level", level)),
            h(
              "form",
              { class: "card", onsubmit: (ev: Event) => ev.preventDefault() },
              warning,
              field("Camera", camera),
              field("Microphone", microphone),
              field("Language you speak", spoken),
              field("Captions in", captions, "Captions of the others' words are shown in this language."),
              h("div", { class: "checks" }, h("label", {}, muted, " Join with microphone off"), h("label", {}, cameraOff, " Join with camera off")),
              h("div", { class: "actions" }, go, cancel),
              status,
            ),
          ),
        ),
      );
      video.classList.toggle("off", cameraOff.checked);

      void LocalMedia.acquire({ cameraId: prefs.cameraId, microphoneId: prefs.microphoneId }).then(async ({ media, warning: w }) => {
        if (!root.isConnected || root.dataset["screen"] !== "pre-join") {
          media.stop();
          return;
        }
        local = media;
        video.srcObject = media.stream;
        warning.replaceChildren(...(w ? [errorBox(`${w.readable}. You can still join.`)] : []));
        watchLevel();
        await fillDevices().catch(() => undefined);
        status.replaceChildren();
        go.disabled = false;
      });
    },
    dispose() {
      meter?.close();
      if (!handedOver) local?.stop();
    },
  };
}

function option(o: { value: string; label: string }, selected: string): HTMLOptionElement {
  const el = h("option", { value: o.value }, o.label);
  if (o.value === selected) el.selected = true;
  return el;
}
