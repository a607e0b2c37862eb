// The incoming-call prompt: who calls, accept or decline, and the ring time left.

import { h } from "../dom";
import type { ServerEvents } from "../protocol";

export type Incoming = ServerEvents["call:incoming"];

export interface IncomingActions {
  accept(call: Incoming): void;
  decline(call: Incoming): void;
  /** The ring ran out on this side (the server confirms with call:missed). */
  timedOut(call: Incoming): void;
}

export class IncomingPrompt {
  private readonly dialog: HTMLDialogElement;
  private readonly countdown: HTMLElement;
  private timer: number | null = null;
  private deadline: number;
  private done = false;

  constructor(
    readonly call: Incoming,
    conversationTitle: string,
    inCall: boolean,
    private readonly actions: IncomingActions,
  ) {
    this.deadline = Date.now() + call.ringTimeoutS * 1000;
    this.countdown = h("p", { class: "countdown", "aria-live": "off" });
    const caller = call.caller.displayName || call.caller.userId;
    const kind = call.media === "audio" ? "audio" : "video";
    const accept = h(
      "button",
      { type: "button", class: "primary accept", onclick: () => this.finish(() => this.actions.accept(call)) },
      inCall ? "Accept (leaves your call)" : "Accept",
    );
    const decline = h(
      "button",
      { type: "button", class: "danger decline", onclick: () => this.finish(() => this.actions.decline(call)) },
      "Decline",
    );
    this.dialog = h(
      "dialog",
      { class: "incoming", role: "alertdialog", "aria-labelledby": "incoming-title", "aria-describedby": "incoming-desc" },
      h("h2", { id: "incoming-title" }, `${caller} is calling`),
      h("p", { id: "incoming-desc" }, `Incoming ${kind} call in ${conversationTitle}.`),
      this.countdown,
      h("div", { class: "actions" }, accept, decline),
    );
    // Escape means "not now": the same as declining.
    this.dialog.addEventListener("cancel", (ev) => {
      ev.preventDefault();
      this.finish(() => this.actions.decline(call));
    });
    document.body.append(this.dialog);
    this.dialog.showModal();
    accept.focus();
    this.tick();
    this.timer = window.setInterval(() => this.tick(), 500);
  }

  private tick(): void {
    const left = Math.max(0, Math.ceil((this.deadline - Date.now()) / 1000));
    this.countdown.textContent = `Ringing · ${left} s left`;
    if (left <= 0) this.finish(() => this.actions.timedOut(this.call));
  }

  private finish(then: () => void): void {
    if (this.done) return;
    this.close();
    then();
  }

  /** Close without acting (answered elsewhere, cancelled by the caller). */
  close(): void {
    this.done = true;
    if (this.timer !== null) window.clearInterval(this.timer);
    if (this.dialog.open) this.dialog.close();
    this.dialog.remove();
  }
}
