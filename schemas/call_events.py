"""Call lifecycle events, published on ``call.evt.<call_id>.<name>`` into ``CALL_EVENTS``.

The stream is the history of every call: replaying it in order rebuilds the live state.
Each event names the call, has a unique ``event_id`` (also used as the JetStream
de-duplication id), the time it happened, and ``seq``: the call's revision, a per-call
sequence (1, 2, 3 ... with no gap) given by the compare-and-set that made the change, so any
consumer can order a call's events and drop duplicates whatever order they arrive in.
Advisory events that describe no change of the call's state (the active speaker, from a media
node) carry ``seq`` 0 and are ordered by their stream sequence only.
"""

from datetime import datetime
from typing import ClassVar, Literal

import msgspec

from schemas.ids import Id, Lang, new_id
from schemas.message import Message, utc_now

ConversationType = Literal["DIRECT", "GROUP"]
"""DIRECT: one-to-one, never more than two people, always peer-to-peer.
GROUP: up to 50 people, peer-to-peer while two are active, SFU from the third."""

CallMode = Literal["p2p", "sfu"]
MediaKind = Literal["audio", "video"]
ParticipantKind = Literal["user", "guest"]

LeaveReason = Literal[
    "left", "declined", "removed", "connection_lost", "heartbeat_timeout", "call_ended"
]
"""Why one participant stopped being part of a call."""

CallStatus = Literal["initiated", "ringing", "active", "reconnecting", "ended"]
"""The call's state machine: initiated -> ringing -> active (<-> reconnecting) -> ended."""

EndReason = Literal[
    "completed",
    "missed",
    "declined",
    "failed",
    "connection_lost",
    "heartbeat_timeout",
    "max_duration",
]
"""Why a whole call ended (the design document's end reasons)."""


class Participant(msgspec.Struct, frozen=True, kw_only=True):
    """Who takes part in a call. Guests have no ``user_id``.

    ``language`` is the language the person speaks (passed to speech recognition);
    ``caption_language`` the language they read captions in (``None``: the one they speak).
    """

    participant_id: Id
    kind: ParticipantKind
    user_id: Id | None = None
    display_name: str = ""
    language: Lang = "en"
    caption_language: Lang | None = None
    #: Who this is across calls: the user id of a member, the guest id of a guest (the
    #: ``sub`` of the guest token). History uses it to show a guest the call it joined.
    principal_id: Id | None = None


class CallEvent(Message, frozen=True, kw_only=True):
    """Fields every call event carries."""

    #: The last token of the subject the event is published on.
    subject_name: ClassVar[str] = ""

    call_id: Id
    event_id: Id = msgspec.field(default_factory=new_id)
    occurred_at: datetime = msgspec.field(default_factory=utc_now)
    #: The call's revision: 1, 2, 3 ... per call, no gaps; 0 for advisory events.
    seq: int = 0


class CallInitiated(CallEvent, frozen=True, kw_only=True, tag="call.initiated"):
    """Someone started a call in a conversation."""

    subject_name: ClassVar[str] = "initiated"

    conversation_id: Id
    conversation_type: ConversationType
    initiator: Participant
    media: MediaKind = "video"
    mode: CallMode = "p2p"


class CallRinging(CallEvent, frozen=True, kw_only=True, tag="call.ringing"):
    """The other members of the conversation are being rung."""

    subject_name: ClassVar[str] = "ringing"

    ringing_user_ids: list[Id]
    ring_timeout_s: float
    #: What a rung person's client shows (so the event alone can ring them).
    conversation_id: Id | None = None
    conversation_type: ConversationType | None = None
    media: MediaKind = "video"
    caller: Participant | None = None


class ParticipantJoined(CallEvent, frozen=True, kw_only=True, tag="participant.joined"):
    """A person (member or guest) is now active in the call."""

    subject_name: ClassVar[str] = "participant_joined"

    participant: Participant
    active_count: int
    #: The person joined by answering a ring (an "accept").
    answered_ring: bool = False


class ParticipantLeft(CallEvent, frozen=True, kw_only=True, tag="participant.left"):
    """A person stopped being active in the call."""

    subject_name: ClassVar[str] = "participant_left"

    participant_id: Id
    reason: LeaveReason
    active_count: int


class MediaStateChanged(CallEvent, frozen=True, kw_only=True, tag="media.state_changed"):
    """A participant muted or unmuted their microphone or camera."""

    subject_name: ClassVar[str] = "media_state_changed"

    participant_id: Id
    audio_enabled: bool
    video_enabled: bool


MigrationOutcome = Literal["completed", "failed", "rolled_back"]
"""completed: every participant acknowledged the new path; failed: someone's new path did
not carry media before the deadline (the call stays on the old path); rolled_back: the
migration was abandoned (the target no longer applied, or its media node went away)."""

MigrationReason = Literal[
    "participant_count",
    "p2p_media_failed",
    "node_unavailable",
    "node_refused",
    "deadline",
    "path_failed",
    "superseded",
    "retry",
    "call_ended",
]
"""Why the selector migrated (``participant_count``: the design's 3-person rule both ways;
``p2p_media_failed``: the direct path never carried media or stopped; ``retry``: an earlier
attempt failed), or why a migration did not complete (``node_refused``: the media node
would not open a session, or none had room; ``node_unavailable``: it stopped answering;
``path_failed``: a participant's client could not bring the new path up; ``deadline``: a
participant's new path carried no media in time; ``superseded``: the participant count
changed back and the target no longer applies; ``call_ended``: the call ended first)."""


class MigrationStarted(CallEvent, frozen=True, kw_only=True, tag="call.migration_started"):
    """The mode selector decided to move the call's media (make-before-break begins).

    ``deadline_s`` is how long participants have to bring up the new path; ``prewarmed``
    says whether they already held idle SFU sessions.
    """

    subject_name: ClassVar[str] = "migration_started"

    from_mode: CallMode
    to_mode: CallMode
    epoch: int
    reason: MigrationReason
    node_id: Id | None = None
    deadline_s: float = 0.0
    prewarmed: bool = False


class CallModeChanged(CallEvent, frozen=True, kw_only=True, tag="call.mode_changed"):
    """A migration between peer-to-peer and SFU ended: completed, failed or rolled back.

    ``duration_ms`` runs from the decision to the last participant's acknowledgement (or to
    the failure); ``max_gap_ms`` is the longest media interruption any participant reported.
    With ``outcome`` other than ``completed`` the call is still in ``from_mode``.
    """

    subject_name: ClassVar[str] = "mode_changed"

    from_mode: CallMode
    to_mode: CallMode
    epoch: int
    duration_ms: float
    max_gap_ms: float = 0.0
    outcome: MigrationOutcome = "completed"
    reason: MigrationReason = "participant_count"
    node_id: Id | None = None


class CallEnded(CallEvent, frozen=True, kw_only=True, tag="call.ended"):
    """The call is over for everyone."""

    subject_name: ClassVar[str] = "ended"

    reason: EndReason
    duration_s: float = 0.0
    ended_by: Id | None = None


class ActiveSpeakerChanged(
    CallEvent, frozen=True, kw_only=True, tag="media.active_speaker_changed"
):
    """The loudest participant of an SFU call changed (the media node applies hysteresis).

    ``participant_id`` is ``None`` when nobody is speaking any more. ``level_dbov`` is the
    new speaker's smoothed audio level (0 = loudest, -127 = silence).
    """

    subject_name: ClassVar[str] = "active_speaker_changed"

    participant_id: Id | None
    previous_participant_id: Id | None = None
    level_dbov: float = -127.0
    node_id: Id | None = None


RingOutcome = Literal["accepted", "declined", "missed", "cancelled"]


MediaPathState = Literal["ready", "failed"]


class ParticipantMediaPath(CallEvent, frozen=True, kw_only=True, tag="participant.media_path"):
    """A participant's client reported on a media path.

    During a migration (``epoch`` = the migration's): ``ready`` — the new path carries the
    others' media (the old one is kept until the migration completes); ``failed`` — it could
    not bring the new path up (``reason``: ``node_refused``, ``ice_failed``, ``timeout`` ...).
    Outside a migration, ``failed`` with ``mode`` ``p2p`` means the direct path never carried
    media or stopped (ICE failed or stuck, frames no longer decoding): the call falls back to
    the SFU for good. ``max_gap_ms`` is the longest gap in received media the client saw.
    """

    subject_name: ClassVar[str] = "media_path"

    participant_id: Id
    #: The migration epoch reported on (outside a migration: the call's current epoch).
    epoch: int
    #: The path reported on.
    mode: CallMode
    state: MediaPathState
    #: Short machine-readable cause of a failure (``node_refused``, ``ice_failed`` ...).
    reason: str = ""
    #: The other end of a failed direct path.
    peer_id: Id | None = None
    #: Longest gap in received media the client saw around the switch, in milliseconds.
    max_gap_ms: float = 0.0


class TranscriptionChanged(CallEvent, frozen=True, kw_only=True, tag="call.transcription_changed"):
    """A participant turned live transcription (and captions) on or off for the whole call."""

    subject_name: ClassVar[str] = "transcription_changed"

    enabled: bool
    by_participant_id: Id | None = None


class ParticipantLanguageChanged(
    CallEvent, frozen=True, kw_only=True, tag="participant.language_changed"
):
    """A participant changed the language they speak or read captions in."""

    subject_name: ClassVar[str] = "language_changed"

    participant_id: Id
    language: Lang
    caption_language: Lang | None = None


class CaptionsUplinkChanged(
    CallEvent, frozen=True, kw_only=True, tag="participant.captions_uplink_changed"
):
    """A participant of a peer-to-peer call asked for (or gave up) an audio-only uplink to a
    media node, whose tap feeds the transcribers: its browser cannot transcribe, and its
    video stays peer-to-peer. The mode selector places the call's uplinks on a node
    (:class:`CaptionsNodeChanged`)."""

    subject_name: ClassVar[str] = "captions_uplink_changed"

    #: Who asked.
    participant_id: Id
    #: ``True``: this participant wants the uplink; ``False``: no longer.
    enabled: bool


class CaptionsNodeChanged(CallEvent, frozen=True, kw_only=True, tag="call.captions_node_changed"):
    """The mode selector placed the audio-only captions uplinks of a peer-to-peer call on a
    media node, moved them to another (their node died or drains), or released them
    (``node_id`` absent: nobody needs one now, transcription is off, or the call is on the
    SFU, where the call's own sessions are transcribed)."""

    subject_name: ClassVar[str] = "captions_node_changed"

    #: The node the captions uplinks now go to (absent: none).
    node_id: Id | None = None
    #: The node they were on before (absent: none).
    previous_node_id: Id | None = None


class CallStatusChanged(CallEvent, frozen=True, kw_only=True, tag="call.status_changed"):
    """The call moved between states of its state machine (e.g. ringing -> active)."""

    subject_name: ClassVar[str] = "status_changed"

    from_status: CallStatus
    to_status: CallStatus


class ParticipantDisconnected(CallEvent, frozen=True, kw_only=True, tag="participant.disconnected"):
    """A participant's connection was lost; it may resume within ``grace_s`` seconds."""

    subject_name: ClassVar[str] = "participant_disconnected"

    participant_id: Id
    grace_s: float


class ParticipantResumed(CallEvent, frozen=True, kw_only=True, tag="participant.resumed"):
    """A participant reconnected within the grace period and kept its place."""

    subject_name: ClassVar[str] = "participant_resumed"

    participant_id: Id
    participant: Participant | None = None
    #: The microphone and camera state the participant kept through the drop (``None`` in
    #: events written before these fields existed: unknown, not "on").
    audio_enabled: bool | None = None
    video_enabled: bool | None = None


class RingEnded(CallEvent, frozen=True, kw_only=True, tag="call.ring_ended"):
    """Rings to these members stopped: they answered, declined, missed it, or it was cancelled."""

    subject_name: ClassVar[str] = "ring_ended"

    user_ids: list[Id]
    outcome: RingOutcome


AnyCallEvent = (
    CallInitiated
    | CallRinging
    | ParticipantJoined
    | ParticipantLeft
    | MediaStateChanged
    | CallModeChanged
    | CallEnded
    | ActiveSpeakerChanged
    | CallStatusChanged
    | ParticipantDisconnected
    | ParticipantResumed
    | RingEnded
    | MigrationStarted
    | ParticipantMediaPath
    | TranscriptionChanged
    | ParticipantLanguageChanged
    | CaptionsUplinkChanged
    | CaptionsNodeChanged
)
"""Every event on ``call.evt.>``; decode any of them with
``msgspec.json.decode(data, type=AnyCallEvent)`` and replay the stream to rebuild a call."""


class CallEventEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """The fields every call event carries, readable from any version of any event.

    Not published: a consumer decodes it when an event does not decode as
    :data:`AnyCallEvent` (a type newer than the consumer, during a rolling upgrade), so it
    still knows which call and revision the event belongs to.
    """

    #: The event's type tag (``call.ended`` ...), possibly one this code does not know.
    type: str
    call_id: Id
    event_id: Id
    occurred_at: datetime
    seq: int = 0


CALL_EVENT_TYPES: tuple[type[CallEvent], ...] = (
    CallInitiated,
    CallRinging,
    ParticipantJoined,
    ParticipantLeft,
    MediaStateChanged,
    CallModeChanged,
    CallEnded,
    ActiveSpeakerChanged,
    CallStatusChanged,
    ParticipantDisconnected,
    ParticipantResumed,
    RingEnded,
    MigrationStarted,
    ParticipantMediaPath,
    TranscriptionChanged,
    ParticipantLanguageChanged,
    CaptionsUplinkChanged,
    CaptionsNodeChanged,
)
