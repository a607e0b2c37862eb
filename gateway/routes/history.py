"""``/api/calls/history``, ``/api/calls/{id}``, ``/api/calls/{id}/transcript``: past calls.

History and transcripts are read from MongoDB (the archive's projection of the event
stream). ``GET /api/calls/{id}`` answers the live state while the call is still in the
``calls`` bucket, with its archived history when the archive has it, and the archived call
alone once it is gone from the bucket.

Access: a person sees the calls they took part in or were rung for; the transcript only of
calls they took part in (a guest: the call it joined, by the guest id of its token), and only
while they still may be in the conversation: a guest whose share link was revoked, or who
was removed from the call, and a member who left the conversation read nothing more. The
transcript holds only what was said while the reader was in the call (each of their
presence windows, joined to left). Someone the live call refuses is never shown its
archived view while it still runs.
"""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pymongo.errors import PyMongoError

from gateway import state_machine as sm
from gateway.api_models import CallView, ErrorResponse, InviteeView, Model, ParticipantView
from gateway.archive.documents import CallSession, HistoryEntry, ParticipantRecord
from gateway.archive.repository import ArchiveRepository, Cursor, InvalidCursor
from gateway.context import Caller, Ctx, GatewayContext
from gateway.conversations import may_take_part
from gateway.errors import CallError
from gateway.tokens import Principal
from schemas.logs import get_logger

log = get_logger("gateway.history")

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 503)
}

router = APIRouter(prefix="/api/calls", tags=["history"], responses=ERRORS)

#: How long a live call's view waits for its archived history before answering without it.
LIVE_HISTORY_TIMEOUT_S = 1.0
#: Clocks of the transcriber and the gateway differ a little: a segment that ended this
#: close to a presence window still counts as heard in it.
PRESENCE_SLACK = timedelta(seconds=2)


class HistoryItem(Model):
    """One call in the caller's history."""

    call_id: str
    conversation_id: str
    conversation_type: Literal["DIRECT", "GROUP"]
    media: Literal["audio", "video"]
    #: initiator, participant (joined), or invitee (rung, never joined).
    role: Literal["initiator", "participant", "invitee"]
    took_part: bool
    missed: bool
    status: str
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    duration_s: float | None = None
    initiator_user_id: str | None = None
    participant_count: int = 0


class HistoryPage(Model):
    items: list[HistoryItem]
    #: Pass as ``cursor`` for the next (older) page; ``null`` on the last page.
    next_cursor: str | None = None


class ArchivedParticipantView(Model):
    participant_id: str
    kind: Literal["user", "guest"]
    user_id: str | None = None
    display_name: str = ""
    language: str = "en"
    joined_at: float
    left_at: float | None = None
    leave_reason: str | None = None
    audio_enabled: bool = True
    video_enabled: bool = True
    disconnects: int = 0


class ModeChangeView(Model):
    at: float
    from_mode: Literal["p2p", "sfu"]
    to_mode: Literal["p2p", "sfu"]
    outcome: str
    reason: str
    duration_ms: float
    max_gap_ms: float = 0.0


class CallHistoryView(Model):
    """What the archive knows of a call beyond its live state."""

    duration_s: float | None = None
    setup_s: float | None = None
    participants: list[ArchivedParticipantView]
    mode_changes: list[ModeChangeView]
    transcription_enabled: bool = False
    guest_count: int = 0
    max_active: int = 0


class CallDetail(CallView):
    """A call: its state (live while in the ``calls`` bucket, else archived) and history."""

    source: Literal["live", "archive"]
    history: CallHistoryView | None = None


class CaptionView(Model):
    language: str
    text: str
    translated: bool
    untranslated_reason: str | None = None


class SegmentView(Model):
    utterance_id: str
    participant_id: str
    speaker_name: str = ""
    language: str
    text: str
    #: When the speech ended (seconds since the epoch); segments are in this order.
    spoken_at: float
    start_s: float
    end_s: float
    confidence: float | None = None
    source: str
    captions: list[CaptionView]


class TranscriptView(Model):
    call_id: str
    segments: list[SegmentView]
    next_cursor: str | None = None


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _repo(ctx: Ctx) -> ArchiveRepository:
    repo = ctx.history
    if repo is None:
        raise CallError("unavailable", "call history is not configured (MONGO_URL)")
    return repo


def _cursor(token: str | None) -> Cursor | None:
    if token is None:
        return None
    try:
        return Cursor.decode(token)
    except InvalidCursor as exc:
        raise CallError("bad_request", str(exc)) from None


def _unavailable(exc: Exception) -> CallError:
    log.warning("history.mongo_failed", error=type(exc).__name__)
    return CallError("unavailable", "call history is unavailable, try again")


@router.get("/history", summary="Your calls, newest first (cursor pagination; missed only)")
async def history(
    ctx: Ctx,
    who: Caller,
    *,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    missed: Annotated[bool | None, Query(description="true: only missed calls")] = None,
) -> HistoryPage:
    repo = _repo(ctx)
    after = _cursor(cursor)
    try:
        entries = await repo.history(who.principal_id, missed=missed, after=after, limit=limit)
    except PyMongoError as exc:
        raise _unavailable(exc) from None
    next_cursor = None
    if len(entries) == limit:
        last = entries[-1]
        next_cursor = Cursor(last.created_ms, last.call_id).encode()
    return HistoryPage(items=[_item(e) for e in entries], next_cursor=next_cursor)


def _item(e: HistoryEntry) -> HistoryItem:
    return HistoryItem(
        call_id=e.call_id,
        conversation_id=e.conversation_id,
        conversation_type=e.conversation_type,
        media=e.media,
        role=e.role,
        took_part=e.took_part,
        missed=e.missed,
        status=e.status,
        created_at=e.created_at.timestamp(),
        started_at=_ts(e.started_at),
        ended_at=_ts(e.ended_at),
        end_reason=e.end_reason,
        duration_s=e.duration_s,
        initiator_user_id=e.initiator_user_id,
        participant_count=e.participant_count,
    )


async def _guest_still_welcome(ctx: GatewayContext, who: Principal) -> None:
    """A guest whose share link was revoked (or is gone) reads nothing more (403)."""
    if who.kind == "guest":
        await ctx.guests.admit(who)


def _refuse_removed(who: Principal, participants: Sequence[ParticipantRecord]) -> None:
    """A guest removed from the call (by a moderator, or with its link) reads nothing more."""
    if who.kind == "guest" and any(
        p.principal_id == who.principal_id and p.leave_reason == "removed" for p in participants
    ):
        raise CallError("forbidden", "you were removed from this call")


async def _still_in_conversation(ctx: GatewayContext, who: Principal, conversation_id: str) -> None:
    """A member who left the conversation (or a guest of another) reads its calls no more."""
    if not may_take_part(await ctx.conversations.get(conversation_id), who):
        raise CallError("forbidden", "you are no longer in this conversation")


async def _still_live(ctx: GatewayContext, call_id: str) -> bool:
    entry = await ctx.calls.store.get(call_id)
    return entry is not None and entry.value.status != "ended"


@router.get("/{call_id}", summary="A call: live state while it runs, then from the archive")
async def get_call(call_id: str, ctx: Ctx, who: Caller) -> CallDetail:
    await _guest_still_welcome(ctx, who)
    live: CallView | None = None
    try:
        state = await ctx.calls.view(who, call_id)
        live = CallView.model_validate(sm.call_view(state))
    except CallError as exc:
        if exc.code != "not_found" or ctx.history is None:
            raise
        if await _still_live(ctx, call_id):
            raise  # the live call refuses this caller: its archive must not show it either
    if live is None:
        archived = await _archived(ctx, who.principal_id, call_id, required=True)
    else:
        # The live view stands on its own: a slow or absent archive only leaves out history.
        try:
            archived = await asyncio.wait_for(
                _archived(ctx, who.principal_id, call_id, required=False), LIVE_HISTORY_TIMEOUT_S
            )
        except TimeoutError:
            archived = None
    if archived is not None:
        _refuse_removed(who, archived[1])
    if live is not None:
        history = _history_view(*archived) if archived is not None else None
        return CallDetail(**live.model_dump(), source="live", history=history)
    assert archived is not None
    session, participants = archived
    return CallDetail(
        call_id=session.call_id,
        conversation_id=session.conversation_id,
        conversation_type=session.conversation_type,
        status=session.status,
        mode=session.mode,
        media=session.media,
        initiator_user_id=session.initiator_user_id or "",
        created_at=session.created_at.timestamp(),
        started_at=_ts(session.started_at),
        ended_at=_ts(session.ended_at),
        end_reason=session.end_reason,
        participants=[_present(p) for p in participants if p.left_at is None],
        invitees=[InviteeView(user_id=i.user_id, status=i.outcome) for i in session.invitees],
        source="archive",
        history=_history_view(session, participants),
    )


async def _archived(
    ctx: Ctx, principal_id: str, call_id: str, *, required: bool
) -> tuple[CallSession, list[ParticipantRecord]] | None:
    """The archived call if the caller may see it; with ``required``, 404 when not."""
    repo = ctx.history
    if repo is None:
        if required:
            raise CallError("not_found", "no such call")
        return None
    try:
        entry = await repo.history_entry(principal_id, call_id)
        session = await repo.session(call_id) if entry is not None else None
        participants = await repo.participants(call_id) if session is not None else []
    except PyMongoError as exc:
        if required:
            raise _unavailable(exc) from None
        return None  # the live view stands on its own
    if session is None:
        if required:
            raise CallError("not_found", "no such call")
        return None
    return session, participants


def _present(p: ParticipantRecord) -> ParticipantView:
    return ParticipantView(
        participant_id=p.participant_id,
        kind=p.kind,
        user_id=p.user_id,
        display_name=p.display_name,
        language=p.language,
        audio_enabled=p.audio_enabled,
        video_enabled=p.video_enabled,
    )


def _history_view(session: CallSession, participants: list[ParticipantRecord]) -> CallHistoryView:
    return CallHistoryView(
        duration_s=session.duration_s,
        setup_s=session.setup_s,
        participants=[
            ArchivedParticipantView(
                participant_id=p.participant_id,
                kind=p.kind,
                user_id=p.user_id,
                display_name=p.display_name,
                language=p.language,
                joined_at=p.joined_at.timestamp(),
                left_at=_ts(p.left_at),
                leave_reason=p.leave_reason,
                audio_enabled=p.audio_enabled,
                video_enabled=p.video_enabled,
                disconnects=p.disconnects,
            )
            for p in participants
        ],
        mode_changes=[
            ModeChangeView(
                at=m.at.timestamp(),
                from_mode=m.from_mode,
                to_mode=m.to_mode,
                outcome=m.outcome,
                reason=m.reason,
                duration_ms=m.duration_ms,
                max_gap_ms=m.max_gap_ms,
            )
            for m in session.mode_changes
        ],
        transcription_enabled=session.transcription_ever_enabled,
        guest_count=session.guest_count,
        max_active=session.max_active,
    )


@router.get(
    "/{call_id}/transcript",
    summary="The call's transcript and captions (only for people who were in the call)",
)
async def transcript(
    call_id: str,
    ctx: Ctx,
    who: Caller,
    *,
    lang: Annotated[str | None, Query(max_length=16, description="only captions in")] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> TranscriptView:
    repo = _repo(ctx)
    after = _cursor(cursor)
    await _guest_still_welcome(ctx, who)
    try:
        entry = await repo.history_entry(who.principal_id, call_id)
        if entry is None:
            raise CallError("not_found", "no such call")
        if not entry.took_part:
            raise CallError("forbidden", "only people who were in the call may read its transcript")
        participants = await repo.participants(call_id)
        _refuse_removed(who, participants)
        await _still_in_conversation(ctx, who, entry.conversation_id)
        segments, captions = await repo.transcript(call_id, after=after, limit=limit)
    except PyMongoError as exc:
        raise _unavailable(exc) from None
    names = {p.participant_id: p.display_name for p in participants}
    # The page (and its cursor) is the archive's; what the reader gets of it, their own.
    page_end = segments[-1] if len(segments) == limit else None
    windows = _presence(who, participants)
    segments = [s for s in segments if _heard(s.speech_ended_at, windows)]
    wanted = lang.lower() if lang else None
    by_utterance: dict[str, list[CaptionView]] = {}
    for c in sorted(captions, key=lambda c: c.language):
        if wanted is None or c.language == wanted:
            by_utterance.setdefault(c.utterance_id, []).append(
                CaptionView(
                    language=c.language,
                    text=c.text,
                    translated=c.translated,
                    untranslated_reason=c.untranslated_reason,
                )
            )
    views = [
        SegmentView(
            utterance_id=s.utterance_id,
            participant_id=s.participant_id,
            speaker_name=names.get(s.participant_id, ""),
            language=s.language,
            text=s.text,
            spoken_at=s.speech_ended_at.timestamp(),
            start_s=s.start_s,
            end_s=s.end_s,
            confidence=s.confidence,
            source=s.source,
            captions=by_utterance.get(s.utterance_id, []),
        )
        for s in segments
    ]
    next_cursor = None
    if page_end is not None:
        next_cursor = Cursor(page_end.spoken_ms, page_end.utterance_id).encode()
    return TranscriptView(call_id=call_id, segments=views, next_cursor=next_cursor)


Window = tuple[datetime, datetime | None]


def _utc(at: datetime) -> datetime:
    """Times are stored in UTC; nx-27017 may hand some back without a zone."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _presence(who: Principal, participants: Sequence[ParticipantRecord]) -> list[Window]:
    """When the reader was in the call: one window per time they joined (a rejoin is a new
    participant), open while they are still there."""
    return [
        (_utc(p.joined_at), None if p.left_at is None else _utc(p.left_at))
        for p in participants
        if p.principal_id == who.principal_id
    ]


def _heard(at: datetime, windows: Sequence[Window]) -> bool:
    at = _utc(at)
    return any(
        joined - PRESENCE_SLACK <= at and (left is None or at <= left + PRESENCE_SLACK)
        for joined, left in windows
    )
