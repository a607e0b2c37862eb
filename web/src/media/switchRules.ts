// The protocol's rules for who makes which path when, as pure functions over what the client
// knows (docs/socket-protocol.md, "Peer-to-peer media" and "SFU and migrations").

import type { CallMode, ConversationType, ModeChanged } from "../protocol";

/**
 * On `call:participant-joined`: do we (already in the call) offer a direct link to the
 * newcomer? Not when the call is on the SFU or moving there, nor when the join brings a
 * GROUP call to three or more (it is about to move to the SFU).
 */
export function offerToNewcomer(o: {
  conversationType: ConversationType;
  activeCount: number;
  primary: CallMode;
  migratingTo: CallMode | null;
}): boolean {
  if (o.primary !== "p2p" || o.migratingTo === "sfu") return false;
  return !(o.conversationType === "GROUP" && o.activeCount >= 3);
}

/** In a mesh built after a failed migration, the smaller participant id offers. */
export function meshOffers(selfId: string, others: readonly string[], linked: ReadonlySet<string>): string[] {
  return others.filter((id) => !linked.has(id) && selfId < id).sort();
}

export interface SessionHeld {
  sessionId: string;
  /** Opened by `call:sfu-prewarm`: after a failed migration it goes back to idle. */
  prewarmed: boolean;
}

/** What to do when a migration ends (`call:mode-changed`). */
export interface AfterModeChange {
  primary: CallMode;
  /** Close every direct link. */
  closeP2P: boolean;
  /** SFU sessions to close. */
  closeSessions: string[];
  /** SFU sessions to take back to idle pre-warm (stop sending, keep connected). */
  idleSessions: string[];
  /** Participants to offer a direct link to (a P2P call of three or more after a failure). */
  offerTo: string[];
}

export function afterModeChange(
  ev: Pick<ModeChanged, "outcome" | "toMode" | "fromMode">,
  o: {
    selfId: string;
    others: readonly string[];
    linked: ReadonlySet<string>;
    /** The SFU session the switch of this migration brought up (if any). */
    newSession: SessionHeld | null;
    /** Every SFU session held. */
    sessions: readonly SessionHeld[];
    /** The SFU session carrying the call now (when the call is on the SFU). */
    primarySession: string | null;
  },
): AfterModeChange {
  const none: AfterModeChange = { primary: ev.fromMode, closeP2P: false, closeSessions: [], idleSessions: [], offerTo: [] };
  if (ev.outcome === "completed") {
    if (ev.toMode === "sfu") {
      // Keep the session this migration brought up (else the one the call was on); when
      // neither is known, close none rather than guess: a later switch names the session.
      const keep = o.newSession?.sessionId ?? o.primarySession ?? null;
      return {
        ...none,
        primary: "sfu",
        closeP2P: true,
        closeSessions: keep === null ? [] : o.sessions.filter((s) => s.sessionId !== keep).map((s) => s.sessionId),
      };
    }
    return { ...none, primary: "p2p", closeSessions: o.sessions.map((s) => s.sessionId) };
  }
  // Failed or rolled back: the call stays on fromMode; drop the new path.
  if (ev.toMode === "sfu") {
    const s = o.newSession;
    const result: AfterModeChange = { ...none, primary: ev.fromMode };
    if (s && s.sessionId !== o.primarySession) {
      if (s.prewarmed && ev.fromMode === "p2p") result.idleSessions = [s.sessionId];
      else result.closeSessions = [s.sessionId];
    }
    if (ev.fromMode === "p2p") result.offerTo = meshOffers(o.selfId, o.others, o.linked);
    return result;
  }
  // A failed move back to P2P: the SFU stays, the new direct links go.
  return { ...none, primary: ev.fromMode, closeP2P: ev.fromMode === "sfu" };
}
