// Guest join through a share link (`/join?link=...`): a display name and a language, then
// straight into the call. A refused link says why.

import type { Api } from "../api";
import { field, h, select } from "../dom";
import { AppError, toAppError } from "../errors";
import { LANGUAGES, loadPrefs } from "../prefs";
import type { GuestTokenView } from "../protocol";
import { errorBox, heading, type Screen } from "./screen";

/** Why a share link was refused, in the words a guest needs. */
export function refusalText(err: AppError): string {
  const r = err.reason.toLowerCase();
  if (r.includes("direct")) return "This link cannot be used: direct (one-to-one) calls never admit guests.";
  if (r.includes("expired")) return "This link has expired. Ask for a new one.";
  if (r.includes("revoked")) return "This link was revoked by the person who shared it.";
  if (r.includes("used up")) return "This link has been used as many times as allowed. Ask for a new one.";
  if (err.code === "unauthorized") return "This link is not valid (it may be incomplete or damaged).";
  if (err.code === "not_found") return "This link does not lead to a conversation any more.";
  return `This link cannot be used: ${err.readable}`;
}

export function guestJoinScreen(api: Api, link: string, onAdmitted: (t: GuestTokenView) => void): Screen {
  return {
    name: "guest-join",
    title: "Join a call",
    render(root) {
      const prefs = loadPrefs();
      const name = h("input", { name: "displayName", autocomplete: "name", required: true, maxlength: 64 });
      const language = select({ name: "language" }, LANGUAGES, prefs.spokenLanguage || navigator.language.slice(0, 2) || "en");
      const submit = h("button", { type: "submit", class: "primary" }, "Join call");
      const status = h("div", { class: "form-status", "aria-live": "polite" });
      const form = h(
        "form",
        { class: "card" },
        field("Your name", name, "The others see this name, with a guest badge."),
        field("Language you speak", language),
        submit,
        status,
      );
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const display = name.value.trim();
        if (!display) {
          status.replaceChildren(errorBox("Enter the name the others will see."));
          name.focus();
          return;
        }
        submit.disabled = true;
        status.replaceChildren(h("p", {}, "Checking the link…"));
        api
          .redeemLink(link, display, language.value)
          .then(onAdmitted)
          .catch((err: unknown) => {
            const e = toAppError(err);
            status.replaceChildren(errorBox(refusalText(e)));
            submit.disabled = e.code === "forbidden" || e.code === "unauthorized";
            if (!submit.disabled) submit.focus();
          });
      });
      root.append(
        h(
          "section",
          { class: "screen narrow" },
          heading("Join a call as a guest"),
          h("p", {}, "You were invited to a group call. No account needed."),
          form,
        ),
      );
      name.focus();
    },
  };
}

export function guestMessageScreen(title: string, message: string, action?: { label: string; run(): void }): Screen {
  return {
    name: "guest-message",
    title,
    render(root) {
      root.append(
        h(
          "section",
          { class: "screen narrow" },
          heading(title),
          h("p", { role: "status" }, message),
          action ? h("button", { type: "button", class: "primary", onclick: () => action.run() }, action.label) : null,
        ),
      );
    },
  };
}
