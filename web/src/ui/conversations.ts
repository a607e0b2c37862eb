// The signed-in person's conversations: call, join a call in progress, history; missed calls.

import type { Api } from "../api";
import { h } from "../dom";
import { toAppError } from "../errors";
import type { ConversationSummary } from "../protocol";
import { errorBox, heading, type Screen } from "./screen";

export interface MissedCall {
  callId: string;
  from: string;
  conversationTitle: string;
  at: Date;
}

export interface ConversationActions {
  call(c: ConversationSummary): void;
  join(c: ConversationSummary, callId: string): void;
  history(c: ConversationSummary): void;
  dismissMissed(callId: string): void;
}

export function conversationTitle(c: ConversationSummary, selfId: string): string {
  if (c.title) return c.title;
  const others = c.members.filter((m) => m.userId !== selfId).map((m) => m.userId);
  return others.join(", ") || c.conversationId;
}

export function conversationsScreen(
  api: Api,
  selfId: string,
  missed: readonly MissedCall[],
  actions: ConversationActions,
): Screen {
  return {
    name: "conversations",
    title: "Conversations",
    render(root) {
      const list = h("ul", { class: "conversation-list", "aria-busy": "true" });
      const status = h("div", { class: "list-status" }, h("p", {}, "Loading your conversations…"));
      const missedBox = h("section", { class: "missed", "aria-label": "Missed calls" });
      const renderMissed = () => {
        missedBox.replaceChildren();
        missedBox.hidden = missed.length === 0;
        if (missed.length === 0) return;
        missedBox.append(h("h2", {}, "Missed calls"));
        const ul = h("ul", {});
        for (const m of missed) {
          ul.append(
            h(
              "li",
              { class: "missed-call" },
              h("span", {}, `Missed call from ${m.from} in ${m.conversationTitle} at ${m.at.toLocaleTimeString()}`),
              h(
                "button",
                {
                  type: "button",
                  class: "link",
                  "aria-label": `Dismiss missed call from ${m.from}`,
                  onclick: () => {
                    actions.dismissMissed(m.callId);
                    renderMissed();
                  },
                },
                "Dismiss",
              ),
            ),
          );
        }
        missedBox.append(ul);
      };
      renderMissed();
      const load = () => {
        list.setAttribute("aria-busy", "true");
        api
          .conversations()
          .then(({ conversations }) => {
            list.replaceChildren(...conversations.map((c) => item(c)));
            status.replaceChildren(
              conversations.length ? h("span", {}) : h("p", {}, "You have no conversations yet."),
            );
          })
          .catch((err: unknown) => status.replaceChildren(errorBox(`Your conversations could not be loaded. ${toAppError(err).readable}`)))
          .finally(() => list.setAttribute("aria-busy", "false"));
      };
      const item = (c: ConversationSummary) => {
        const title = conversationTitle(c, selfId);
        const live = c.activeCall;
        const callButton = live
          ? h(
              "button",
              { type: "button", class: "primary", "aria-label": `Join the call in ${title}`, onclick: () => actions.join(c, live.callId) },
              "Join call",
            )
          : h(
              "button",
              { type: "button", class: "primary", "aria-label": `Call ${title}`, onclick: () => actions.call(c) },
              "Call",
            );
        return h(
          "li",
          { class: "conversation", "data-conversation-id": c.conversationId },
          h(
            "div",
            { class: "conversation-text" },
            h("h2", {}, title),
            h(
              "p",
              { class: "meta" },
              c.type === "DIRECT" ? "Direct" : `Group · ${c.members.length} members`,
              live ? ` · call in progress (${live.participantCount} in it)` : "",
            ),
          ),
          h(
            "div",
            { class: "conversation-actions" },
            callButton,
            h(
              "button",
              { type: "button", "aria-label": `Call history of ${title}`, onclick: () => actions.history(c) },
              "History",
            ),
          ),
        );
      };
      root.append(
        h(
          "section",
          { class: "screen" },
          heading("Conversations"),
          missedBox,
          status,
          list,
          h("button", { type: "button", onclick: load, "aria-label": "Refresh conversations" }, "Refresh"),
        ),
      );
      load();
    },
  };
}
