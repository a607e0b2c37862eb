// Call history of a conversation. Until the gateway serves history, the screen says it is
// not available (it asks the server every time, so it starts working when history lands).

import type { Api } from "../api";
import { h } from "../dom";
import { toAppError } from "../errors";
import type { ConversationSummary } from "../protocol";
import { errorBox, heading, type Screen } from "./screen";

interface HistoryCall {
  callId?: string;
  startedAt?: number | null;
  endedAt?: number | null;
  endReason?: string | null;
  participants?: { displayName?: string }[];
}

export function historyScreen(api: Api, c: ConversationSummary, title: string, back: () => void): Screen {
  return {
    name: "history",
    title: `History · ${title}`,
    render(root) {
      const body = h("div", { class: "history", "aria-live": "polite" }, h("p", {}, "Loading the call history…"));
      root.append(
        h(
          "section",
          { class: "screen" },
          heading(`Call history · ${title}`),
          body,
          h("button", { type: "button", onclick: back }, "Back to conversations"),
        ),
      );
      api
        .history(c.conversationId)
        .then(({ calls }) => {
          const items = (calls as HistoryCall[]).map((call) =>
            h(
              "li",
              {},
              `${call.startedAt ? new Date(call.startedAt * 1000).toLocaleString() : "Not answered"} · `,
              (call.participants ?? []).map((p) => p.displayName ?? "").join(", "),
              call.endReason ? ` · ${call.endReason}` : "",
            ),
          );
          body.replaceChildren(items.length ? h("ul", {}, ...items) : h("p", {}, "No calls yet in this conversation."));
        })
        .catch((err: unknown) => {
          const e = toAppError(err);
          body.replaceChildren(
            e.code === "not_found" && e.status === 404
              ? h("p", { class: "unavailable", role: "status" }, "Call history is not available on this server yet.")
              : errorBox(`The call history could not be loaded. ${e.readable}`),
          );
        });
    },
  };
}
