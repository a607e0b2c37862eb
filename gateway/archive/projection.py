"""The fold of one call's events into its archived documents: pure and deterministic.

Order: events carry ``seq``, the call's revision (1, 2, 3 ... with no gap). When a call has
such events, they are folded in ``seq`` order, up to the first missing revision; later ones
wait in the log (``pending_events``) until the gap fills. Events with ``seq`` 0 are advisory
(the active speaker) and change no document. A call written before revisions existed has
``seq`` 0 on every event: it is folded in stream order instead. Duplicates never reach the
fold (the log is keyed by event id, and a revision counts once), so folding the same log
twice, or in any arrival order, gives the same documents.

An event this archive cannot decode (a type newer than it, during a rolling upgrade) is
logged as its :class:`CallEventEnvelope`: a revision that changes nothing, so the fold goes
on past it (and once the archive is upgraded, refolding the log reads the event itself).

Gap policy: a missing revision is not waited for for ever. Once the call's ``call.ended`` is
in the log, or once the stream stored an event ``gap_deadline_s`` after the first event
waiting behind the gap (``now``: the stream time of the event being folded in; times are the
stream's, so a replay folds exactly as the first pass did), the fold skips the missing
revisions and records them in ``CallSession.missing_revisions``; if one arrives later, the
next fold puts it in its place.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from gateway.archive.documents import (
    CallSession,
    HistoryEntry,
    InviteeRecord,
    ModeChangeRecord,
    ParticipantRecord,
)
from schemas.call_events import (
    ActiveSpeakerChanged,
    AnyCallEvent,
    CallEnded,
    CallEvent,
    CallEventEnvelope,
    CallInitiated,
    CallModeChanged,
    CallRinging,
    CallStatusChanged,
    MediaStateChanged,
    MigrationStarted,
    ParticipantDisconnected,
    ParticipantJoined,
    ParticipantLanguageChanged,
    ParticipantLeft,
    RingEnded,
    TranscriptionChanged,
)


def epoch_ms(at: datetime) -> int:
    """Milliseconds since the epoch (MongoDB keeps times to the millisecond)."""
    return int(at.timestamp() * 1000)


#: Events that describe no change of the call's state.
ADVISORY: tuple[type[CallEvent], ...] = (ActiveSpeakerChanged,)


#: A logged event: decoded, or (a type this archive does not know) its envelope only.
LoggedCallEvent = AnyCallEvent | CallEventEnvelope


@dataclass(frozen=True, slots=True)
class Sequenced:
    """An event and where the stream stored it."""

    stream_seq: int
    event: LoggedCallEvent
    #: When the stream stored it; ``None``: unknown (logged before this field).
    stored_at: datetime | None = None


@dataclass
class Folded:
    """What one call's log folds into."""

    session: CallSession | None
    participants: list[ParticipantRecord] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    applied: int = 0
    pending: int = 0
    skipped: list[int] = field(default_factory=list)


class Ordered(NamedTuple):
    """The events to fold in order, how many wait behind a gap, the revisions skipped."""

    events: list[LoggedCallEvent]
    pending: int
    skipped: list[int]


def in_order(
    log: Sequence[Sequenced],
    *,
    now: datetime | None = None,
    gap_deadline_s: float | None = None,
) -> Ordered:
    """The events to fold, in order, under the gap policy (see the module's docstring)."""
    stateful = [s for s in log if not isinstance(s.event, ADVISORY)]
    revised = [s for s in stateful if s.event.seq > 0]
    if not revised:
        return Ordered([s.event for s in sorted(stateful, key=lambda s: s.stream_seq)], 0, [])
    by_seq: dict[int, Sequenced] = {}
    for s in sorted(revised, key=lambda s: s.stream_seq):
        by_seq.setdefault(s.event.seq, s)  # a revision counts once
    ended = any(isinstance(s.event, CallEnded) for s in by_seq.values())
    top = max(by_seq)
    ordered: list[LoggedCallEvent] = []
    skipped: list[int] = []
    expected = 1
    while expected <= top:
        if expected in by_seq:
            ordered.append(by_seq[expected].event)
            expected += 1
            continue
        waiting = by_seq[min(k for k in by_seq if k > expected)]
        since = waiting.stored_at or waiting.event.occurred_at
        overdue = (
            now is not None
            and gap_deadline_s is not None
            and (now - since).total_seconds() >= gap_deadline_s
        )
        if not (ended or overdue):
            break
        skipped.extend(range(expected, waiting.event.seq))
        expected = waiting.event.seq
    return Ordered(ordered, len(by_seq) - len(ordered), skipped)


#: Where participant and history versions start: above any log's length, so a document
#: written by an archive before per-document versions (``version`` = the log's length) is
#: older than every one written since, and is replaced on the next fold of its call.
DOCUMENT_VERSION_BASE = 1 << 32


def fold(
    log: Sequence[Sequenced],
    *,
    now: datetime | None = None,
    gap_deadline_s: float | None = None,
) -> Folded:
    """Fold a call's whole log.

    ``version`` of the session is the log's length (every event logged counts, pending ones
    too: a fuller log is a newer session). That of a participant or history document is
    :data:`DOCUMENT_VERSION_BASE` plus the position, in fold order, of the last event that
    could change it: a document no event
    touched keeps its version (and its bytes), so the writer need not write it again, and a
    fold of an older log can never give a changed document a version as high as a newer
    fold's.
    """
    events, pending, skipped = in_order(log, now=now, gap_deadline_s=gap_deadline_s)
    version = len(log)
    builder: _Builder | None = None
    for position, event in enumerate(events, start=DOCUMENT_VERSION_BASE + 1):
        if builder is None:
            if not isinstance(event, CallInitiated):
                continue  # nothing to attach it to yet; it stays in the log
            builder = _Builder(event, version, position)
            continue
        builder.apply(event, position)
    if builder is None:
        return Folded(session=None, pending=pending, skipped=skipped)
    builder.session.pending_events = pending
    builder.session.missing_revisions = skipped
    return Folded(
        session=builder.session,
        participants=list(builder.participants.values()),
        history=builder.history(),
        applied=len(events),
        pending=pending,
        skipped=skipped,
    )


class _Builder:
    def __init__(self, initiated: CallInitiated, version: int, position: int) -> None:
        #: The fold position of the last event that changed what history entries show.
        self.history_version = position
        self.session = CallSession(
            call_id=initiated.call_id,
            version=version,
            seq=initiated.seq,
            conversation_id=initiated.conversation_id,
            conversation_type=initiated.conversation_type,
            media=initiated.media,
            mode=initiated.mode,
            initiator_user_id=initiated.initiator.user_id,
            initiator_participant_id=initiated.initiator.participant_id,
            created_at=initiated.occurred_at,
        )
        self.participants: dict[str, ParticipantRecord] = {}

    def _touch(self, pid: str, at: int) -> ParticipantRecord | None:
        """The participant's record, marked as changed by the event at ``at``."""
        record = self.participants.get(pid)
        if record is not None:
            record.version = at
        return record

    def apply(self, event: LoggedCallEvent, at: int) -> None:
        """Fold one event, the ``at``-th in fold order."""
        s = self.session
        s.seq = max(s.seq, event.seq)
        if isinstance(event, (CallRinging, RingEnded, CallStatusChanged, CallEnded)):
            self.history_version = at  # invitees, outcomes, status and times
        match event:
            case CallRinging(ringing_user_ids=users):
                known = {i.user_id for i in s.invitees}
                s.invitees.extend(InviteeRecord(user_id=u) for u in users if u not in known)
            case RingEnded(user_ids=users, outcome=outcome):
                for invitee in s.invitees:
                    if invitee.user_id in users:
                        invitee.outcome = outcome
            case ParticipantJoined(participant=p, active_count=active):
                principal = p.principal_id or p.user_id
                self.participants[p.participant_id] = ParticipantRecord(
                    call_id=s.call_id,
                    participant_id=p.participant_id,
                    version=at,
                    kind=p.kind,
                    principal_id=principal,
                    user_id=p.user_id,
                    display_name=p.display_name,
                    language=p.language,
                    caption_language=p.caption_language,
                    joined_at=event.occurred_at,
                )
                if principal is not None and principal not in s.participant_principals:
                    s.participant_principals.append(principal)
                    s.guest_count += p.kind == "guest"
                    self.history_version = at  # a new entry, and everyone's count
                s.participant_count = len(s.participant_principals)
                s.max_active = max(s.max_active, active)
            case ParticipantLeft(participant_id=pid, reason=reason):
                if (record := self._touch(pid, at)) is not None:
                    record.left_at = event.occurred_at
                    record.leave_reason = reason
            case ParticipantDisconnected(participant_id=pid):
                if (record := self._touch(pid, at)) is not None:
                    record.disconnects += 1
            case MediaStateChanged(participant_id=pid):
                if (record := self._touch(pid, at)) is not None:
                    record.audio_enabled = event.audio_enabled
                    record.video_enabled = event.video_enabled
                    record.media_changes += 1
            case ParticipantLanguageChanged(participant_id=pid):
                if (record := self._touch(pid, at)) is not None:
                    record.language = event.language
                    record.caption_language = event.caption_language
            case CallStatusChanged(to_status=status):
                s.status = status
                if status == "active" and s.started_at is None:
                    s.started_at = event.occurred_at
                    s.setup_s = (event.occurred_at - s.created_at).total_seconds()
            case MigrationStarted():
                s.migrations_started += 1
            case CallModeChanged():
                s.mode_changes.append(
                    ModeChangeRecord(
                        at=event.occurred_at,
                        from_mode=event.from_mode,
                        to_mode=event.to_mode,
                        epoch=event.epoch,
                        outcome=event.outcome,
                        reason=event.reason,
                        duration_ms=event.duration_ms,
                        max_gap_ms=event.max_gap_ms,
                        node_id=event.node_id,
                    )
                )
                if event.outcome == "completed":
                    s.mode = event.to_mode
            case TranscriptionChanged(enabled=enabled):
                s.transcription_enabled = enabled
                s.transcription_ever_enabled = s.transcription_ever_enabled or enabled
            case CallEnded():
                s.status = "ended"
                s.ended_at = event.occurred_at
                s.end_reason = event.reason
                s.ended_by = event.ended_by
                if event.duration_s:
                    s.duration_s = event.duration_s
                elif s.started_at is not None:
                    s.duration_s = (event.occurred_at - s.started_at).total_seconds()
                else:
                    s.duration_s = 0.0
            case _:
                pass  # resumed, and types this archive predates: logged, nothing to fold

    def history(self) -> list[HistoryEntry]:
        s = self.session
        entries: list[HistoryEntry] = []

        def entry(principal: str, role: str, took_part: bool, missed: bool) -> HistoryEntry:
            return HistoryEntry(
                principal_id=principal,
                call_id=s.call_id,
                version=self.history_version,
                conversation_id=s.conversation_id,
                conversation_type=s.conversation_type,
                media=s.media,
                role=role,  # type: ignore[arg-type]
                took_part=took_part,
                missed=missed,
                status=s.status,
                created_at=s.created_at,
                created_ms=epoch_ms(s.created_at),
                started_at=s.started_at,
                ended_at=s.ended_at,
                end_reason=s.end_reason,
                duration_s=s.duration_s,
                initiator_user_id=s.initiator_user_id,
                participant_count=s.participant_count,
            )

        for principal in s.participant_principals:
            role = "initiator" if principal == s.initiator_user_id else "participant"
            entries.append(entry(principal, role, True, False))
        if s.initiator_user_id and s.initiator_user_id not in s.participant_principals:
            entries.append(entry(s.initiator_user_id, "initiator", False, False))
        for invitee in s.invitees:
            if invitee.user_id in s.participant_principals:
                continue
            missed = invitee.outcome in ("missed", "cancelled") or (
                invitee.outcome == "ringing" and s.status == "ended"
            )
            entries.append(entry(invitee.user_id, "invitee", False, missed))
        return entries
