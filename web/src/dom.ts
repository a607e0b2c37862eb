// A tiny hyperscript helper: typed elements, attributes, children. No framework needed.

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      el.className = String(value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, ...children);
  return el;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el as T;
}

/** A `<select>` with its options; `selected` picks the current value. */
export function select(
  attrs: Attrs,
  options: ReadonlyArray<{ value: string; label: string }>,
  selected: string,
): HTMLSelectElement {
  const el = h("select", attrs);
  for (const o of options) {
    const opt = h("option", { value: o.value }, o.label);
    if (o.value === selected) opt.selected = true;
    el.appendChild(opt);
  }
  return el;
}

/** A labelled form field: `<label for=id>text</label>` then the control. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const wrap = h("div", { class: "field" }, h("label", { for: id }, label), control);
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    wrap.appendChild(h("p", { class: "hint", id: hintId }, hint));
  }
  return wrap;
}
