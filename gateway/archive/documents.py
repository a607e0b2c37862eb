"""The archive's documents in MongoDB, after the design document's data model.

| collection | one document per | ``_id`` |
|---|---|---|
| ``call_events`` | call event as published (the log the rest is folded from) | event id |
| ``call_sessions`` | call (CallSession) | call id |
| ``call_participants`` | participant of a call (CallParticipant) | ``<call>:<participant>`` |
| ``call_history`` | person and call they took part in or were rung for | ``<principal>:<call>`` |
| ``transcriptions`` | final transcript segment (Transcription) | ``<call>:<utterance>`` |
| ``captions`` | final caption of a segment in one language | ``<call>:<utterance>:<lang>`` |

Every projected document carries ``version``. A session's is how many events of its call
the archive had logged when it computed it. A participant's or history entry's is 2**32
plus the position (in fold order) of the last event that could change it: a document no
event touched keeps its version and is not written again, and one written before this
scheme (its version a log's length) is replaced on the next fold. Writes only ever raise a
version, so concurrent or replayed writes can never move a document back in time.
"""

from datetime import datetime
from typing import Literal

import msgspec

from schemas.call_events import (
    CallMode,
    CallStatus,
    ConversationType,
    EndReason,
    LeaveReason,
    MediaKind,
    MigrationOutcome,
    MigrationReason,
    ParticipantKind,
)

HistoryRole = Literal["initiator", "participant", "invitee"]
InviteOutcome = Literal["ringing", "accepted", "declined", "missed", "cancelled"]


class Doc(msgspec.Struct, kw_only=True):
    """Base of every archived document (mutable while folding, written whole)."""


class ModeChangeRecord(Doc, kw_only=True):
    """One finished migration between peer-to-peer and SFU."""

    at: datetime
    from_mode: CallMode
    to_mode: CallMode
    epoch: int
    outcome: MigrationOutcome
    reason: MigrationReason
    duration_ms: float
    max_gap_ms: float = 0.0
    node_id: str | None = None


class InviteeRecord(Doc, kw_only=True):
    """A member who was rung, and what became of the ring."""

    user_id: str
    outcome: InviteOutcome = "ringing"


class CallSession(Doc, kw_only=True):
    """One call from initiation to its end (``call_sessions``)."""

    call_id: str
    version: int = 0
    #: Events folded in (the contiguous revisions 1..seq), and events logged but waiting
    #: for a missing revision.
    seq: int = 0
    pending_events: int = 0
    #: Revisions the fold gave up waiting for (the call ended, or the gap deadline passed)
    #: and went on without; empty when every revision arrived.
    missing_revisions: list[int] = []
    conversation_id: str
    conversation_type: ConversationType
    media: MediaKind
    mode: CallMode
    status: CallStatus = "initiated"
    initiator_user_id: str | None = None
    initiator_participant_id: str
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: EndReason | None = None
    ended_by: str | None = None
    duration_s: float | None = None
    #: Seconds from initiation to the call becoming active (someone answered).
    setup_s: float | None = None
    invitees: list[InviteeRecord] = []
    #: Principals (user ids and guest ids) who joined at least once.
    participant_principals: list[str] = []
    participant_count: int = 0
    guest_count: int = 0
    max_active: int = 0
    transcription_enabled: bool = False
    transcription_ever_enabled: bool = False
    mode_changes: list[ModeChangeRecord] = []
    migrations_started: int = 0


class ParticipantRecord(Doc, kw_only=True):
    """One participant of one call (``call_participants``); a rejoin is a new participant."""

    call_id: str
    participant_id: str
    version: int = 0
    kind: ParticipantKind
    principal_id: str | None = None
    user_id: str | None = None
    display_name: str = ""
    language: str = "en"
    caption_language: str | None = None
    joined_at: datetime
    left_at: datetime | None = None
    leave_reason: LeaveReason | None = None
    audio_enabled: bool = True
    video_enabled: bool = True
    media_changes: int = 0
    disconnects: int = 0


class HistoryEntry(Doc, kw_only=True):
    """A call in one person's history (``call_history``): what ``GET /api/calls/history``
    lists, newest first."""

    principal_id: str
    call_id: str
    version: int = 0
    conversation_id: str
    conversation_type: ConversationType
    media: MediaKind
    role: HistoryRole
    #: The person joined the call at least once (may read its transcript).
    took_part: bool
    #: Rung, never joined, and the ring was not declined.
    missed: bool
    status: CallStatus
    created_at: datetime
    #: ``created_at`` in milliseconds since the epoch: the sort and pagination key (integer
    #: comparisons behave the same on every server).
    created_ms: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: EndReason | None = None
    duration_s: float | None = None
    initiator_user_id: str | None = None
    participant_count: int = 0


class TranscriptionRecord(Doc, kw_only=True):
    """One final transcript segment (``transcriptions``); partials are not archived."""

    call_id: str
    utterance_id: str
    participant_id: str
    language: str
    text: str
    revision: int
    start_s: float
    end_s: float
    confidence: float | None = None
    source: str
    model: str = ""
    speech_ended_at: datetime
    #: ``speech_ended_at`` in milliseconds since the epoch: the transcript's order.
    spoken_ms: int = 0
    produced_at: datetime


class CaptionRecord(Doc, kw_only=True):
    """One final caption of a segment in one listener language (``captions``)."""

    call_id: str
    utterance_id: str
    language: str
    text: str
    revision: int
    translated: bool
    untranslated_reason: str | None = None
    source_language: str
    speaker_participant_id: str
    produced_at: datetime


class LoggedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A call event as the archive logged it (``call_events``)."""

    event_id: str
    call_id: str
    seq: int
    stream_seq: int
    type: str
    occurred_at: datetime
    #: When the stream stored it (how long a gap behind it has been waited for).
    stored_at: datetime | None = None
    #: The event itself, field for field as published.
    event: dict[str, object]


#: A document folded from a call's events, written only over an older ``version``.
Versioned = CallSession | ParticipantRecord | HistoryEntry
