// The call header's words: who the call is with (a live region: read out when it changes,
// e.g. someone joins) and how long it has lasted (a separate, non-live element: a ticking
// clock inside a live region would be read out every second).

export interface CallStatusText {
  /** For the `role="status"` element. Changes only when the call's company or state does. */
  status: string;
  /** For the non-live duration element ("" while nobody else is in). */
  duration: string;
}

export function callStatusText(o: {
  status: string;
  title: string;
  others: readonly { displayName: string }[];
  /** Elapsed seconds since the call began (null: not begun). */
  elapsedS: number | null;
}): CallStatusText {
  if (o.others.length === 0) {
    const status = o.status === "ringing" || o.status === "initiated" ? `Calling ${o.title}…` : "Waiting for others to join…";
    return { status, duration: "" };
  }
  return {
    status: `In call with ${o.others.map((p) => p.displayName).join(", ")}`,
    duration: formatDuration(Math.max(0, Math.floor(o.elapsedS ?? 0))),
  };
}

export function formatDuration(total: number): string {
  const m = Math.floor(total / 60);
  const s = total % 60;
  const hours = Math.floor(m / 60);
  const mm = String(m % 60).padStart(2, "0");
  const ss = String(s).padStart(2, "0");
  return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}
