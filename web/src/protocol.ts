// The gateway's wire protocol as the client sees it (REST bodies and Socket.IO events),
// after docs/socket-protocol.md. Field names are the gateway's camelCase.

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
  /** The language this participant reads captions in (the spoken one if not set). */
  captionLanguage?: string;
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
  epoch?: number;
  mediaNodeId?: string | null;
  migration?: { epoch: number; fromMode: CallMode; toMode: CallMode } | null;
  transcription?: boolean;
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

/** One call in the person's history (`GET /api/calls/history`). */
export interface HistoryItem {
  callId: string;
  conversationId: string;
  conversationType: ConversationType;
  media: MediaKind;
  role: "initiator" | "participant" | "invitee";
  tookPart: boolean;
  missed: boolean;
  status: string;
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
  endReason: string | null;
  durationS: number | null;
  initiatorUserId: string | null;
  participantCount: number;
}

export interface HistoryPage {
  items: HistoryItem[];
  nextCursor: string | null;
}

export interface CallDetailView extends CallView {
  source: "live" | "archive";
  history: {
    durationS: number | null;
    participants: { participantId: string; kind: "user" | "guest"; displayName: string; joinedAt: number; leftAt: number | null }[];
    modeChanges: { at: number; fromMode: CallMode; toMode: CallMode; outcome: string; reason: string; durationMs: number; maxGapMs: number }[];
    transcriptionEnabled: boolean;
    guestCount: number;
    maxActive: number;
  } | null;
}

export interface TranscriptView {
  callId: string;
  segments: {
    utteranceId: string;
    participantId: string;
    speakerName: string;
    language: string;
    text: string;
    spokenAt: number;
    source: string;
    captions: { language: string; text: string; translated: boolean }[];
  }[];
  nextCursor: string | null;
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

/** One downlink slot: which m-line carries whom (docs/socket-protocol.md, "While on the SFU"). */
export interface SlotInfo {
  index: number;
  mid: string;
  kind: MediaKind;
  ssrc: number;
  /** Who is assigned to the slot. */
  participantId: string | null;
  /** Whose media the slot carries right now (differs while waiting for a keyframe). */
  showingId: string | null;
}

export interface SfuRefView {
  nodeId: string;
  sessionId: string;
  videoSlots?: number;
  audioSlots?: number;
}

export interface ModeSwitch {
  callId: string;
  participantId: string;
  epoch: number;
  mode: CallMode;
  kind: "migration" | "attach";
  reason: string | null;
  prewarmed: boolean;
  deadlineS: number | null;
  sfu: SfuRefView | null;
  p2p: { offerTo: string | null; peerId: string | null } | null;
  iceServers?: IceServerView[];
}

export interface ModeChanged {
  callId: string;
  /** The call's mode after this (the new one if completed, else the old one). */
  mode: CallMode;
  fromMode: CallMode;
  toMode: CallMode;
  epoch: number;
  outcome: "completed" | "failed" | "rolled_back";
  reason: string | null;
}

export interface SfuPrewarm {
  callId: string;
  participantId: string;
  epoch: number;
  sfu: SfuRefView;
  iceServers?: IceServerView[];
}

/** Server → client events (docs/socket-protocol.md). */
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
  "call:active-speaker": { callId: string; participantId: string | null };
  "call:signal": SignalMessage;
  "call:missed": { callId: string; reason?: string };
  "call:ended": { callId: string; reason: string; durationS?: number; endedBy?: string | null };
  "call:error": { code: string; message: string; event: string };
  // --- SFU and migrations ------------------------------------------------------------------
  "call:migration-started": { callId: string; fromMode: CallMode; toMode: CallMode; epoch: number; reason: string };
  "call:mode-switch": ModeSwitch;
  "call:mode-changed": ModeChanged;
  "call:sfu-prewarm": SfuPrewarm;
  "call:slots": { callId: string; sessionId: string; version: number; reason: string; slots: SlotInfo[] };
  "call:video-demand": { callId: string; sessionId: string; send: boolean; receivers: number };
  "call:sfu-leg": {
    callId: string;
    sessionId: string;
    leg: "uplink" | "downlink";
    state: string;
    reason: string | null;
  };
  "call:sfu-closed": { callId: string; sessionId: string; reason: string };
  // --- captions ------------------------------------------------------------------------------
  "call:transcription-changed": { callId: string; enabled: boolean; by: string | null };
  "call:participant-language": { callId: string; participantId: string; language: string; captionLanguage: string };
  /** The audio-only captions session asked for (`sfu: null`: no longer wanted). */
  "call:captions-uplink": { callId: string; participantId: string; sfu: SfuRefView | null };
  "call:caption": CaptionEvent;
}

/** One caption revision for one listener language. */
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
  untranslatedReason?: string | null;
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
  /** Only for a call this socket is in; short-lived TURN credentials. */
  "call:request-ice-servers": { callId: string };
  "call:sfu-publish": { callId: string; sdp: string; purpose?: "call" | "captions" };
  "call:sfu-downlink": { callId: string };
  "call:sfu-downlink-answer": { callId: string; sdp: string };
  "call:sfu-preferences": { callId: string; pinned: string[]; tiles?: number };
  "call:mode-switched": { callId: string; epoch: number; mode: CallMode; ok: boolean; reason?: string; maxGapMs?: number };
  "call:media-health": { callId: string; state: "failed"; peerId?: string; reason?: string };
  "call:set-transcription": { callId: string; enabled: boolean };
  "call:set-language": { callId: string; language?: string; captionLanguage?: string };
  "call:transcription": {
    callId: string;
    utteranceId: string;
    text: string;
    isFinal: boolean;
    revision?: number;
    language?: string;
  };
  "call:captions-uplink": { callId: string; enabled?: boolean };
}

export interface SfuPublishAck {
  sdp: string;
  sessionId: string;
}

export interface SfuDownlinkAck {
  sdp: string;
  sessionId: string;
  version: number;
  slots: SlotInfo[];
}
