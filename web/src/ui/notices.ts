// Messages for the person: a banner for errors and outcomes (role=alert / status), and a
// polite live region for things a screen reader should hear once.

import { byId, clear, h } from "../dom";

export type Tone = "info" | "error";

let hideTimer: number | null = null;

export function showBanner(message: string, tone: Tone = "info"): void {
  const banner = byId("banner");
  clear(banner);
  banner.className = `banner banner-${tone}`;
  banner.setAttribute("role", tone === "error" ? "alert" : "status");
  banner.appendChild(h("span", { class: "banner-text" }, message));
  banner.appendChild(
    h("button", { type: "button", class: "banner-close", "aria-label": "Dismiss message", onclick: () => hideBanner() }, "×"),
  );
  banner.hidden = false;
  if (hideTimer !== null) window.clearTimeout(hideTimer);
  // Errors stay until dismissed; outcomes fade after a while.
  hideTimer = tone === "info" ? window.setTimeout(hideBanner, 8_000) : null;
}

export function hideBanner(): void {
  const banner = byId("banner");
  banner.hidden = true;
  banner.removeAttribute("role");
  clear(banner);
}

export function bannerText(): string {
  return byId("banner").textContent ?? "";
}

export function announce(message: string): void {
  const region = byId("announcer");
  // Clearing first makes the same sentence announced again when it recurs.
  region.textContent = "";
  window.setTimeout(() => {
    region.textContent = message;
  }, 50);
}
