// The call screen (CallInterface): header with the mode badge and status, the VideoGrid, the
// CallControls, the captions panel (TranscriptionPanel) and the share link of GROUP calls.

import type { Api } from "../api";
import type { CallSession } from "../call/callSession";
import * as model from "../call/callModel";
import { h } from "../dom";
import { toAppError } from "../errors";
import { loadPrefs } from "../prefs";
import { callStatusText } from "./callStatus";
import { CallControls } from "./callControls";
import type { TileData } from "./participantTile";
import { heading, type Screen } from "./screen";
import { TranscriptionPanel } from "./transcriptionPanel";
import { VideoGrid } from "./videoGrid";

export interface CallScreen extends Screen {
  refresh(): void;
}

export function callScreen(session: CallSession, api: Api, title: string): CallScreen {
  const grid = new VideoGrid({
    togglePin: (pid) => session.togglePin(pid),
    framePresented: (pid, at) => session.media.frames.frame(pid, at),
  });
  let panelTouched = false;
  let transcriptionSeen = false;
  const panel = new TranscriptionPanel({
    setTranscription: (on) => void session.captions.setTranscription(on),
    setCaptionLanguage: (language) => void session.setLanguages({ captionLanguage: language }),
    setSpokenLanguage: (language) => void session.setLanguages({ language }),
  });
  const status = h("p", { class: "call-status", role: "status" });
  // Not live: the clock ticks every second and must not be read out each time.
  const duration = h("p", { class: "call-duration", role: "timer", "aria-live": "off", "aria-label": "Call duration", hidden: true });
  const badge = h("span", { class: "mode-badge" });
  const selfBanner = h("div", { class: "reconnecting-banner", role: "status", hidden: true });
  const shareBox = h("div", { class: "share-box", hidden: true });
  let pending = false;
  let startedAt: number | null = null;
  let durationTimer: number | null = null;

  const shareLink = async () => {
    shareBox.hidden = false;
    shareBox.replaceChildren(h("p", {}, "Creating a share link…"));
    try {
      const link = await api.createShareLink(session.state.conversationId);
      const input = h("input", { type: "text", readonly: true, value: link.url, "aria-label": "Share link for guests", class: "share-url" });
      let copied = false;
      try {
        await navigator.clipboard.writeText(link.url);
        copied = true;
      } catch {
        copied = false;
      }
      const expires = new Date(link.expiresAt * 1000).toLocaleString();
      shareBox.replaceChildren(
        h("p", { role: "status" }, copied ? "Share link copied. Guests who open it join this call." : "Copy this link for guests:"),
        input,
        h("p", { class: "hint" }, `Valid until ${expires}.`),
      );
      if (!copied) input.select();
    } catch (err) {
      shareBox.replaceChildren(h("p", { class: "error-box", role: "alert" }, `No share link: ${toAppError(err).readable}`));
    }
  };

  const controls = new CallControls({
    toggleAudio: () => void session.setAudio(!session.local.audioEnabled),
    toggleVideo: () => void session.setVideo(!session.local.videoEnabled),
    toggleScreen: () => void session.toggleScreenShare(),
    toggleCaptions: () => {
      panelTouched = true;
      panel.open = !panel.open;
      render();
    },
    shareLink: () => void shareLink(),
    leave: () => void session.leave(),
    endForAll: () => void session.endForAll(),
  });

  const render = () => {
    pending = false;
    const s = session.state;
    const sinkId = loadPrefs().speakerId;
    session.media.feeds.setSink(sinkId);
    const pins = session.media.pins;
    const tiles: TileData[] = s.participants.map((p) => {
      const isSelf = p.participantId === s.selfId;
      const r = isSelf ? null : session.remote(p.participantId);
      return {
        participant: isSelf
          ? { ...p, audioEnabled: session.local.audioEnabled, videoEnabled: session.local.videoEnabled }
          : p,
        isSelf,
        stream: isSelf ? session.local.stream : (r?.stream ?? null),
        speaking: session.activeSpeaker === p.participantId && s.participants.length > 1,
        reconnecting: isSelf ? session.selfConnection === "reconnecting" : p.connection === "reconnecting",
        ice: r?.connection ?? "",
        path: isSelf ? session.mode : (r?.path ?? ""),
        stats: r?.stats ?? null,
        framesDecoded: r?.framesDecoded ?? 0,
        pinned: pins.includes(p.participantId),
      };
    });
    grid.update(tiles);
    const others = model.others(s);
    const { mode, to } = session.media.badge;
    const modeName = (m: string) => (m === "sfu" ? "SFU" : "P2P");
    const badgeText = to ? `${modeName(mode)} → ${modeName(to)}` : modeName(mode);
    if (badge.textContent !== badgeText) badge.textContent = badgeText;
    badge.dataset["mode"] = mode;
    badge.dataset["migrating"] = to ?? "";
    badge.setAttribute(
      "aria-label",
      to
        ? `Media path: moving from ${mode === "sfu" ? "the media server" : "peer-to-peer"} to ${to === "sfu" ? "the media server (SFU)" : "peer-to-peer (P2P)"}`
        : mode === "sfu"
          ? "Media path: through the media server (SFU)"
          : "Media path: peer-to-peer (P2P)",
    );
    if (startedAt === null && (s.status === "active" || others.length > 0)) startedAt = Date.now();
    const text = callStatusText({
      status: s.status,
      title,
      others,
      elapsedS: startedAt === null ? null : (Date.now() - startedAt) / 1000,
    });
    if (status.textContent !== text.status) status.textContent = text.status;
    if (duration.textContent !== text.duration) duration.textContent = text.duration;
    duration.hidden = text.duration === "";
    status.dataset["status"] = s.status;
    selfBanner.hidden = session.selfConnection !== "reconnecting";
    selfBanner.textContent = "Connection lost. Reconnecting… you stay in the call.";
    // Captions turned on (by anyone): show them, unless this person chose otherwise.
    if (s.transcription && !transcriptionSeen && !panelTouched) panel.open = true;
    transcriptionSeen = s.transcription;
    controls.update({
      audioOn: session.local.audioEnabled,
      videoOn: session.local.videoEnabled,
      hasAudio: session.local.hasAudio,
      hasVideo: session.local.hasVideo,
      sharing: session.local.sharing,
      captionsOpen: panel.open,
      canShareLink: s.conversationType === "GROUP" && session.identity.kind === "user",
      canEndForAll: session.mayEndForAll,
      direct: s.conversationType === "DIRECT",
    });
    if (panel.open) {
      const c = session.captions;
      panel.update({
        lines: c.store.lines,
        version: c.store.version,
        enabled: s.transcription,
        captionLanguage: c.captionLanguage,
        spokenLanguage: c.spokenLanguage,
        source: c.source,
      });
    }
  };

  return {
    name: "call",
    title: `Call · ${title}`,
    render(root) {
      const top = h("header", { class: "call-header" }, heading(title), badge, h("div", { class: "call-status-row" }, status, duration));
      root.append(
        h(
          "section",
          { class: "screen call", "data-call-id": session.callId },
          top,
          selfBanner,
          h("div", { class: "call-body" }, grid.el, panel.el),
          shareBox,
          controls.el,
        ),
      );
      render();
      durationTimer = window.setInterval(render, 1000);
    },
    refresh() {
      if (pending) return;
      pending = true;
      window.setTimeout(render, 30);
    },
    dispose() {
      if (durationTimer !== null) window.clearInterval(durationTimer);
      grid.dispose();
      session.dispose();
    },
  };
}

