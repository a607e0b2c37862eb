// What the person knows about the call they are in: pure functions over a plain state, fed
// by the join acknowledgement and the server's events (tested without a browser).

import type { CallMode, CallStatus, CallView, ConversationType, ParticipantView } from "../protocol";

export interface CallModel {
  callId: string;
  conversationId: string;
  conversationType: ConversationType;
  status: CallStatus;
  mode: CallMode;
  initiatorUserId: string;
  selfId: string;
  /** Transcription (captions) is on for the whole call. */
  transcription: boolean;
  participants: ParticipantView[];
}

export function fromView(view: CallView, selfId: string): CallModel {
  return {
    callId: view.callId,
    conversationId: view.conversationId,
    conversationType: view.conversationType,
    status: view.status,
    mode: view.mode,
    initiatorUserId: view.initiatorUserId,
    selfId,
    transcription: view.transcription ?? false,
    participants: [...view.participants],
  };
}

export function find(m: CallModel, participantId: string): ParticipantView | undefined {
  return m.participants.find((p) => p.participantId === participantId);
}

export function others(m: CallModel): ParticipantView[] {
  return m.participants.filter((p) => p.participantId !== m.selfId);
}

export function upsert(m: CallModel, p: ParticipantView): CallModel {
  const exists = m.participants.some((q) => q.participantId === p.participantId);
  const participants = exists
    ? m.participants.map((q) => (q.participantId === p.participantId ? p : q))
    : [...m.participants, p];
  const status = participants.length >= 2 && (m.status === "ringing" || m.status === "initiated") ? "active" : m.status;
  return { ...m, participants, status };
}

export function remove(m: CallModel, participantId: string): CallModel {
  return { ...m, participants: m.participants.filter((p) => p.participantId !== participantId) };
}

export function patch(m: CallModel, participantId: string, change: Partial<ParticipantView>): CallModel {
  return {
    ...m,
    participants: m.participants.map((p) => (p.participantId === participantId ? { ...p, ...change } : p)),
  };
}

/** What a participant speaks and reads (their caption language defaults to the spoken one). */
export function captionLanguageOf(p: ParticipantView): string {
  return p.captionLanguage || p.language;
}

/** The server's view after a resume: who came and went while this socket was away. */
export function reconcile(m: CallModel, view: CallView): { model: CallModel; added: string[]; removed: string[] } {
  const before = new Set(m.participants.map((p) => p.participantId));
  const after = new Set(view.participants.map((p) => p.participantId));
  return {
    model: { ...fromView(view, m.selfId) },
    added: [...after].filter((id) => !before.has(id) && id !== m.selfId),
    removed: [...before].filter((id) => !after.has(id) && id !== m.selfId),
  };
}

/** May this person end the call for everyone? (the initiator or a moderator of a GROUP). */
export function mayEndForAll(m: CallModel, userId: string | null, role: string | null): boolean {
  if (m.conversationType !== "GROUP" || userId === null) return false;
  return m.initiatorUserId === userId || role === "moderator" || role === "admin";
}

export function endReasonText(reason: string, endedBySelf = false): string {
  switch (reason) {
    case "completed":
      return endedBySelf ? "You left the call." : "The call has ended.";
    case "declined":
      return "The call was declined.";
    case "missed":
      return "No answer: the call was not picked up.";
    case "failed":
      return "The call failed.";
    case "connection_lost":
      return "The call ended: a connection was lost for too long.";
    case "heartbeat_timeout":
      return "The call ended: the connection went silent.";
    case "max_duration":
      return "The call reached its maximum length and ended.";
    default:
      return `The call has ended (${reason}).`;
  }
}

/** Why this person is no longer in the call (their own `call:participant-left`). */
export function selfLeaveText(reason: string): string {
  switch (reason) {
    case "left":
      return "You left the call.";
    case "removed":
      return "You were removed from the call.";
    case "declined":
      return "You declined the call.";
    case "connection_lost":
      return "Your connection was lost for too long: you are no longer in the call.";
    case "heartbeat_timeout":
      return "Your connection went silent: you are no longer in the call.";
    case "call_ended":
      return "The call has ended.";
    default:
      return `You are no longer in the call (${reason}).`;
  }
}

export function leaveReasonText(reason: string): string {
  switch (reason) {
    case "left":
      return "left the call";
    case "removed":
      return "was removed from the call";
    case "declined":
      return "declined";
    case "connection_lost":
      return "lost their connection";
    case "heartbeat_timeout":
      return "went silent and left";
    default:
      return "left the call";
  }
}
