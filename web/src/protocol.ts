// The gateway's wire protocol as the client sees it (REST bodies and Socket.IO events).
// Field names are the gateway's camelCase. Phase-2 events (SFU, captions) are marked DRAFT:
// the server does not send them yet and their shape may still change.

export type ConversationType = "DIRECT" | "GROUP";
export type CallStatus = "initiated" | "ringing" | "active" | "reconnecting" | "ended";
export type CallMode = "p2p" | "sfu";
export type MediaKind = "audio" | "video";
export type Role = "member" | "moderator" | "admin";

export interface ParticipantView {
  participantId: string;
  kind: "user" | "guest";
  userId: string | null;
  displayName: string;
  language: string;
  audioEnabled: boolean;
  videoEnabled: boolean;
  connection: "connected" | "reconnecting";
}

export interface CallView {
  callId: string;
  conversationId: string;
  conversationType: ConversationType;
  status: CallStatus;
  mode: CallMode;
  media: MediaKind;
  initiatorUserId: string;
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
  endReason: string | null;
  participants: ParticipantView[];
  invitees: { userId: string; status: string }[];
}

export interface ConversationSummary {
  conversationId: string;
  type: ConversationType;
  title: string;
  members: { userId: string; role: Role }[];
  myRole: Role;
  activeCall: { callId: string; status: CallStatus; participantCount: number } | null;
}

export interface IceServerView {
  urls: string[];
  username?: string | null;
  credential?: string | null;
}

/** The acknowledgement of call:initiate, call:accept and call:join. */
export interface JoinedAck {
  ok: true;
  callId: string;
  mode: CallMode;
  call: CallView;
  participantId: string;
  resumeToken: string;
  heartbeatIntervalS: number;
  iceServers: IceServerView[];
  resumed?: boolean;
}

export interface ShareLinkView {
  linkId: string;
  conversationId: string;
  token: string;
  url: string;
  expiresAt: number;
  maxUses: number | null;
}

export interface GuestTokenView {
  token: string;
  guestId: string;
  conversationId: string;
}

export type SignalType = "offer" | "answer" | "ice-candidate" | "ice-restart";

export interface SignalMessage {
  callId: string;
  from: string;
  type: SignalType;
  sdp?: string;
  candidate?: RTCIceCandidateInit;
}

/** Server → client events of today's gateway. */
export interface ServerEvents {
  "call:initiated": CallView;
  "call:incoming": {
    callId: string;
    conversationId: string;
    conversationType: ConversationType;
    media: MediaKind;
    caller: { userId: string; displayName: string };
    ringTimeoutS: number;
  };
  "call:accepted": {
    callId: string;
    callee: { userId: string; displayName: string };
    participantId: string;
  };
  "call:started": Omit<JoinedAck, "ok" | "resumeToken">;
  "call:joined": Omit<JoinedAck, "ok" | "resumeToken">;
  "call:participant-joined": { callId: string; participant: ParticipantView; activeCount: number };
  "call:participant-left": {
    callId: string;
    participantId: string;
    reason: string;
    activeCount: number;
  };
  "call:participant-disconnected": { callId: string; participantId: string; graceS: number };
  "call:participant-resumed": {
    callId: string;
    participantId: string;
    /** Media fields may be missing (unknown): keep what you knew. */
    participant?: Partial<ParticipantView>;
  };
  "call:declined": { callId: string; userId: string };
  "call:ring-stopped": { callId: string; outcome: string };
  "call:media-toggled": {
    callId: string;
    participantId: string;
    audioEnabled: boolean;
    videoEnabled: boolean;
  };
  "call:signal": SignalMessage;
  "call:missed": { callId: string; reason?: string };
  "call:ended": { callId: string; reason: string; durationS?: number; endedBy?: string | null };
  "call:error": { code: string; message: string; event: string };
  // --- DRAFT (phase 2) ------------------------------------------------------------------
  "call:mode-switch": {
    callId: string;
    epoch: number;
    mode: CallMode;
    reason: string;
    sfu?: { nodeId: string; sessionId: string };
    p2p?: { offerTo: string[] };
  };
  "call:mode-changed": { callId: string; mode: CallMode; epoch: number; outcome: string };
  "call:caption": CaptionEvent;
}

/** DRAFT (phase 2): one caption revision for one listener language. */
export interface CaptionEvent {
  callId: string;
  utteranceId: string;
  speakerParticipantId: string;
  language: string;
  text: string;
  sourceLanguage: string;
  sourceText: string;
  isFinal: boolean;
  revision: number;
  translated: boolean;
}

/** Client → server events and their payloads. */
export interface ClientEvents {
  "call:initiate": { conversationId: string; media: MediaKind };
  "call:accept": { callId: string; resumeToken?: string };
  "call:join": { callId: string; resumeToken?: string };
  "call:decline": { callId: string };
  "call:leave": { callId: string; participantId?: string };
  "call:end": { callId: string };
  "call:signal": {
    callId: string;
    to: string;
    type: SignalType;
    sdp?: string;
    candidate?: RTCIceCandidateInit;
  };
  "call:toggle-audio": { callId: string; enabled: boolean };
  "call:toggle-video": { callId: string; enabled: boolean };
  "call:heartbeat": { callId: string };
  "call:request-ice-servers": Record<string, never>;
}
