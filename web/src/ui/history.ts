// Call history of a conversation (from the archive, `GET /api/calls/history`), and the stored
// transcript of a call in the person's caption language, the original beside a translation.
// A server without history says so in words (never a blank screen).

import type { Api } from "../api";
import { h } from "../dom";
import { toAppError, type AppError } from "../errors";
import { languageName, loadPrefs } from "../prefs";
import type { ConversationSummary, HistoryItem, TranscriptView } from "../protocol";
import { errorBox, heading, type Screen } from "./screen";

/** Pages of the person's history read to find this conversation's calls. */
const MAX_PAGES = 5;

export function historyScreen(api: Api, c: ConversationSummary, title: string, back: () => void, language: string): Screen {
  return {
    name: "history",
    title: `History · ${title}`,
    render(root) {
      const body = h("div", { class: "history", "aria-live": "polite", "aria-busy": "true" }, h("p", {}, "Loading the call history…"));
      const detail = h("section", { class: "history-detail", "aria-label": "Transcript", hidden: true });
      root.append(
        h(
          "section",
          { class: "screen" },
          heading(`Call history · ${title}`),
          body,
          detail,
          h("button", { type: "button", onclick: back }, "Back to conversations"),
        ),
      );
      const showTranscript = (call: HistoryItem, label: string) => {
        detail.hidden = false;
        detail.replaceChildren(h("h2", {}, `Transcript · ${label}`), h("p", {}, "Loading the transcript…"));
        const reading = loadPrefs().captionLanguage || language;
        api
          .transcript(call.callId, reading)
          .then((t) => detail.replaceChildren(h("h2", {}, `Transcript · ${label}`), transcriptList(t, reading)))
          .catch((err: unknown) => detail.replaceChildren(h("h2", {}, `Transcript · ${label}`), errorBox(`The transcript could not be loaded. ${toAppError(err).readable}`)))
          .finally(() => detail.focus());
        detail.tabIndex = -1;
      };
      void loadCalls(api, c.conversationId)
        .then((calls) => {
          if (calls.length === 0) {
            body.replaceChildren(h("p", { role: "status" }, "No calls yet in this conversation."));
            return;
          }
          body.replaceChildren(
            h(
              "ul",
              { class: "history-list" },
              ...calls.map((call) => {
                const when = new Date((call.startedAt ?? call.createdAt) * 1000).toLocaleString();
                const label = `${when}`;
                return h(
                  "li",
                  { class: "history-call", "data-call-id": call.callId },
                  h("span", {}, `${when} · ${outcomeText(call)}`),
                  call.tookPart
                    ? h("button", { type: "button", class: "link", "aria-label": `Transcript of the call of ${when}`, onclick: () => showTranscript(call, label) }, "Transcript")
                    : null,
                );
              }),
            ),
          );
        })
        .catch((err: unknown) => body.replaceChildren(unavailable(toAppError(err))))
        .finally(() => body.setAttribute("aria-busy", "false"));
    },
  };
}

async function loadCalls(api: Api, conversationId: string): Promise<HistoryItem[]> {
  const found: HistoryItem[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const result = await api.history(cursor);
    found.push(...result.items.filter((i) => i.conversationId === conversationId));
    cursor = result.nextCursor;
    if (!cursor) break;
  }
  return found;
}

function outcomeText(call: HistoryItem): string {
  if (call.missed) return "missed";
  if (call.status !== "ended") return "in progress";
  const secs = Math.round(call.durationS ?? 0);
  const duration = secs >= 60 ? `${Math.floor(secs / 60)} min ${secs % 60} s` : `${secs} s`;
  return `${call.participantCount} ${call.participantCount === 1 ? "person" : "people"}, ${duration}${call.endReason && call.endReason !== "completed" ? ` (${call.endReason})` : ""}`;
}

function unavailable(e: AppError): HTMLElement {
  if ((e.code === "unavailable" && e.status === 503) || (e.code === "not_found" && e.status === 404)) {
    return h("p", { class: "unavailable", role: "status" }, `Call history is not available on this server${e.reason ? ` (${e.reason})` : ""}.`);
  }
  return errorBox(`The call history could not be loaded. ${e.readable}`);
}

function transcriptList(t: TranscriptView, reading: string): HTMLElement {
  if (t.segments.length === 0) return h("p", { role: "status" }, "Nothing was transcribed in this call.");
  return h(
    "ol",
    { class: "caption-list transcript" },
    ...t.segments.map((s) => {
      const caption = s.captions.find((c) => c.language === reading);
      const shown = caption && s.language !== reading ? caption : null;
      return h(
        "li",
        { class: "caption", lang: shown ? reading : s.language },
        h("span", { class: "speaker" }, `${s.speakerName || "Someone"}: `),
        h("span", { class: "text" }, shown ? shown.text : s.text),
        shown ? h("span", { class: "original", lang: s.language }, ` (${languageName(s.language)}: ${s.text})`) : null,
      );
    }),
  );
}
