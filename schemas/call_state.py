"""The live state of a call, as kept in the JetStream KV bucket ``calls`` (key = call id).

The gateway changes an entry only by compare-and-set on its revision, and publishes every
change as a call event (``call.evt.<call_id>.<name>``), so the stream is the history and the
bucket is the present. Times are Unix seconds (float, UTC) so deadlines compare directly.

Every gateway sweeps the bucket for due deadlines (ring timeout, reconnect grace, heartbeat
loss, maximum duration); the first compare-and-set wins, so each timer fires exactly once
whichever gateway started the call, and survives that gateway's crash.
"""

from typing import Literal

import msgspec

from schemas.call_events import (
    CallMode,
    CallStatus,
    ConversationType,
    EndReason,
    MediaKind,
    MigrationReason,
    ParticipantKind,
)
from schemas.ids import Id, Lang

"""initiated: created, nobody rung yet; ringing: waiting for an answer; active: two or more
people are (or were) in; reconnecting: someone lost their connection and is within the grace
period; ended: over for everyone (kept a while for late readers)."""

ConnectionStatus = Literal["connected", "reconnecting"]
InviteStatus = Literal["ringing", "accepted", "declined", "missed", "cancelled"]
MemberRole = Literal["member", "moderator", "admin"]


class CallParticipantState(msgspec.Struct, frozen=True, kw_only=True):
    """One person currently in the call (active or reconnecting within the grace period).

    ``principal_id`` is the user id of a member, or the guest id of a guest; deliveries to
    this person's sockets go to ``user.<principal_id>.signal``.
    """

    participant_id: Id
    kind: ParticipantKind
    principal_id: Id
    user_id: Id | None = None
    display_name: str = ""
    #: The language this person speaks (what speech recognition is told).
    language: Lang = "en"
    #: The language this person reads captions in (``None``: the one they speak).
    caption_language: Lang | None = None
    audio_enabled: bool = True
    video_enabled: bool = True
    joined_at: float
    #: Last state change of this participant (join, resume); heartbeats go to ``presence``.
    last_seen_at: float
    connection: ConnectionStatus = "connected"
    #: When the socket was lost; the grace period runs from here.
    disconnected_at: float | None = None
    #: SHA-256 (hex) of the resume token handed to the participant when it joined.
    resume_token_sha256: str = ""


class PathFailure(msgspec.Struct, frozen=True, kw_only=True):
    """A participant whose new media path did not come up, and why."""

    participant_id: Id
    reason: str


class Migration(msgspec.Struct, frozen=True, kw_only=True):
    """A migration in progress (make-before-break), decided by the mode selector.

    Every participant brings up the new path while keeping the old one and reports
    ``ready`` when the new path carries the others' media; once every participant still in
    the call is ready the migration completes (``CallModeChanged``, outcome ``completed``)
    and clients drop the old path. A failure report, a media node going away or the
    deadline ends it as ``failed`` (the call stays in ``from_mode``, nobody having dropped
    the old path).
    """

    epoch: int
    from_mode: CallMode
    to_mode: CallMode
    reason: MigrationReason
    node_id: Id | None = None
    started_at: float
    deadline_at: float
    prewarmed: bool = False
    #: SFU -> P2P: the participant told to send the offer.
    offerer_id: Id | None = None
    ready: list[Id] = msgspec.field(default_factory=list)
    failures: list[PathFailure] = msgspec.field(default_factory=list)
    #: Longest media gap any participant reported for this migration.
    max_gap_ms: float = 0.0


class CallInvitee(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation member who was rung, and what became of the ring."""

    user_id: Id
    status: InviteStatus = "ringing"


OutboxKind = Literal["event", "command"]


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An event or command written in the same compare-and-set as the change it belongs to.

    The writer publishes every entry of the outbox in ``seq`` order right after its write
    (events into ``CALL_EVENTS`` with ``message_id`` as the de-duplication id, commands on
    core NATS), then removes them. If it dies in between, any gateway's sweeper publishes
    them once ``written_at`` is older than a short grace, after checking the stream for each
    event (a call's events reach the stream in ``seq`` order, so a later or equal ``seq``
    already there means this one is too): no change goes unannounced, none twice.
    ``data`` is the message's JSON exactly as published on ``subject``.
    """

    kind: OutboxKind
    #: The event's ``seq`` (for a command: the ``seq`` of the change that issued it).
    seq: int
    subject: str
    message_id: Id
    written_at: float
    data: msgspec.Raw


class Presence(msgspec.Struct, frozen=True, kw_only=True):
    """Value of ``presence/<call_id>.<participant_id>``: a participant's last sign of life.

    Heartbeats write here (a plain put, no compare-and-set, no event) instead of the call's
    own entry, so a 50-person call's beats never contend with its state changes. The
    sweepers read it when a participant's heartbeat deadline seems to have passed.
    """

    call_id: Id
    participant_id: Id
    last_seen_at: float
    gateway_id: Id


class CallState(msgspec.Struct, frozen=True, kw_only=True):
    """The whole live state of one call (value of ``calls/<call_id>``)."""

    call_id: Id
    conversation_id: Id
    conversation_type: ConversationType
    status: CallStatus
    media: MediaKind = "video"
    mode: CallMode = "p2p"
    #: Migration epoch, advanced by the mode selector with each mode decision.
    epoch: int = 0
    #: The media node of the call while it is on the SFU (a call stays on one node).
    media_node_id: Id | None = None
    #: The migration under way, if any.
    migration: Migration | None = None
    #: The direct path failed once: the call stays on the SFU for the rest of its life.
    p2p_failed: bool = False
    #: While P2P: the node where participants hold idle (pre-warmed) sessions.
    prewarm_node_id: Id | None = None
    #: No new migration is attempted before this (set after a failed attempt).
    mode_retry_at: float | None = None
    #: Migrations that failed in a row (reset by one that completes).
    failed_migrations: int = 0
    #: Live transcription and captions on for this call (any participant may toggle it).
    transcription: bool = False
    #: Peer-to-peer only: participants whose browser cannot transcribe and who asked for an
    #: audio-only uplink to a media node (their video stays peer-to-peer).
    captions_uplinks: list[Id] = msgspec.field(default_factory=list)
    #: The media node the selector placed those uplinks on (None: none placed).
    captions_node_id: Id | None = None
    initiator_user_id: Id
    created_at: float
    #: When unanswered rings become missed (None once nobody is ringing).
    ring_deadline_at: float | None = None
    started_at: float | None = None
    #: The call is ended with ``max_duration`` at this time.
    max_end_at: float
    ended_at: float | None = None
    end_reason: EndReason | None = None
    ended_by: Id | None = None
    #: Timer parameters fixed at creation so every gateway sweeps the call alike.
    heartbeat_timeout_s: float
    reconnect_grace_s: float
    participants: list[CallParticipantState] = msgspec.field(default_factory=list)
    invitees: list[CallInvitee] = msgspec.field(default_factory=list)
    updated_at: float = 0.0
    #: The call's revision: the ``seq`` of the last event written (events count from 1).
    seq: int = 0
    #: Events and commands of recent changes not yet confirmed published (in ``seq`` order).
    outbox: list[OutboxEntry] = msgspec.field(default_factory=list)


class ActiveCallClaim(msgspec.Struct, frozen=True, kw_only=True):
    """Value of ``call_claims/<conversation_id>``: the one active call of a conversation.

    Created with a KV *create*, so two concurrent starts cannot both win.
    """

    conversation_id: Id
    call_id: Id
    claimed_at: float


class ConversationMember(msgspec.Struct, frozen=True, kw_only=True):
    """A member of a conversation and its role (moderators and admins may end calls and
    remove people)."""

    user_id: Id
    role: MemberRole = "member"


class ConversationRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Value of ``conversations/<conversation_id>``: the small registry the messenger (or
    the operator endpoint, or seed data) fills."""

    conversation_id: Id
    type: ConversationType
    members: list[ConversationMember]
    title: str = ""


class ShareLinkRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Value of ``share_links/<link_id>``: a guest invitation to one GROUP conversation.

    The link itself is a signed token naming ``link_id``; this record makes it revocable and
    counts its uses (by compare-and-set).
    """

    link_id: Id
    conversation_id: Id
    created_by: Id
    created_at: float
    expires_at: float
    max_uses: int | None = None
    uses: int = 0
    revoked: bool = False
