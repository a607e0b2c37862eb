// Screens replace each other inside <main>; the new screen's heading gets the focus so
// keyboard and screen-reader users start at the top of what changed.

import { byId, clear, h } from "../dom";

export interface Screen {
  readonly name: string;
  readonly title: string;
  render(root: HTMLElement): void;
  /** Called when another screen replaces this one. */
  dispose?(): void;
}

let current: Screen | null = null;

export function show(screen: Screen): void {
  current?.dispose?.();
  current = screen;
  const main = byId("main");
  clear(main);
  main.dataset["screen"] = screen.name;
  document.title = `${screen.title} · Meeshy calls`;
  screen.render(main);
  const heading = main.querySelector<HTMLElement>("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: false });
  }
}

export function currentScreen(): Screen | null {
  return current;
}

export function heading(text: string): HTMLHeadingElement {
  return h("h1", {}, text);
}

export function errorBox(message: string): HTMLElement {
  return h("p", { class: "error-box", role: "alert" }, message);
}
