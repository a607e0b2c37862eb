// Sign in. In the embedded stack: the development token endpoint (any user id). In
// production the messenger hands over a token (`#token=` or postMessage) and this screen
// only says so when none came.

import type { Api } from "../api";
import { h, field, select } from "../dom";
import { AppError, toAppError } from "../errors";
import { LANGUAGES } from "../prefs";
import { errorBox, heading, type Screen } from "./screen";

const DEMO_USERS = ["alice", "bob", "carol", "dave"];

export function signInScreen(api: Api, onToken: (token: string) => void, message?: string): Screen {
  return {
    name: "sign-in",
    title: "Sign in",
    render(root) {
      const status = h("div", { class: "form-status", "aria-live": "polite" });
      const userId = h("input", {
        name: "userId",
        autocomplete: "username",
        required: true,
        pattern: "[A-Za-z0-9_\\-]{1,128}",
        list: "demo-users",
        spellcheck: "false",
      });
      const displayName = h("input", { name: "displayName", autocomplete: "name", maxlength: 64 });
      const language = select({ name: "language" }, LANGUAGES, navigator.language.slice(0, 2) || "en");
      const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
      const form = h(
        "form",
        { class: "card", "aria-labelledby": "signin-title" },
        field("User id", userId, "In the embedded stack: alice, bob, carol or dave."),
        field("Display name (optional)", displayName),
        field("Language you speak", language),
        submit,
        status,
        h("datalist", { id: "demo-users" }, ...DEMO_USERS.map((u) => h("option", { value: u }))),
      );
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        status.replaceChildren();
        const id = userId.value.trim();
        if (!/^[A-Za-z0-9_-]{1,128}$/.test(id)) {
          status.replaceChildren(errorBox("A user id is letters, digits, - or _ (up to 128)."));
          userId.focus();
          return;
        }
        submit.disabled = true;
        const name = displayName.value.trim() || id.charAt(0).toUpperCase() + id.slice(1);
        api
          .devToken(id, name, language.value)
          .then((r) => onToken(r.token))
          .catch((err: unknown) => {
            const e = toAppError(err);
            const text =
              e instanceof AppError && e.code === "not_found"
                ? "This server has no development sign-in. Open your calls from the messenger, which signs you in."
                : e.readable;
            status.replaceChildren(errorBox(text));
            submit.disabled = false;
          });
      });
      const title = heading("Sign in");
      title.id = "signin-title";
      root.append(
        h(
          "section",
          { class: "screen narrow" },
          title,
          message ? errorBox(message) : null,
          h("p", {}, "Sign in to see your conversations and make calls."),
          form,
        ),
      );
    },
  };
}
