"""The call state machine: pure transitions from one :class:`CallState` to the next.

No I/O here, and nothing random: ids and time are passed in. Each transition returns the
new state and the domain events that describe the change (and any commands it issues);
:mod:`gateway.call_store` stamps them with the call's revision, writes them with the state
by compare-and-set (the outbox) and publishes them. Socket notices are not made here: every
gateway projects them from the events (:mod:`gateway.notices`), whoever made the change. A
transition that finds nothing to do returns ``None`` (a timer that lost the race publishes
nothing).

States: ``initiated`` -> ``ringing`` -> ``active`` <-> ``reconnecting`` -> ``ended``.
Rules (from the design document):
- DIRECT: two people at most; the call ends when either leaves, or when the callee declines.
- GROUP: a decline or a leave affects only that person; the call ends when the last one
  leaves (or, before anyone answered, when every ring was declined or missed).
- Unanswered rings become missed at the ring deadline; a ringing call nobody answered ends
  ``missed``. A lost socket has a grace period to resume; a silent one (no heartbeat) leaves
  with ``heartbeat_timeout``; every call ends at its maximum duration.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.errors import CallError
from gateway.tokens import Principal
from schemas.call_commands import CallCommand
from schemas.call_events import (
    CallEnded,
    CallEvent,
    CallInitiated,
    CallModeChanged,
    CallRinging,
    CallStatus,
    CallStatusChanged,
    CaptionsNodeChanged,
    CaptionsUplinkChanged,
    EndReason,
    LeaveReason,
    MediaKind,
    MediaStateChanged,
    Participant,
    ParticipantDisconnected,
    ParticipantJoined,
    ParticipantLanguageChanged,
    ParticipantLeft,
    ParticipantResumed,
    RingEnded,
    RingOutcome,
    TranscriptionChanged,
)
from schemas.call_state import (
    CallInvitee,
    CallParticipantState,
    CallState,
    ConversationRecord,
)
from schemas.languages import is_readable, is_spoken

_replace = msgspec.structs.replace

LEAVE_TO_END: dict[str, EndReason] = {
    "left": "completed",
    "removed": "completed",
    "declined": "declined",
    "connection_lost": "connection_lost",
    "heartbeat_timeout": "heartbeat_timeout",
    "call_ended": "completed",
}


@dataclass(frozen=True, slots=True)
class Timers:
    """The timer parameters of a new call."""

    ring_timeout_s: float
    heartbeat_timeout_s: float
    reconnect_grace_s: float
    max_duration_s: float


@dataclass(frozen=True, slots=True)
class Languages:
    """What a participant speaks and reads captions in, as a client asked (``None``: keep
    what it was; for a newcomer, the token's language and "read what I speak")."""

    language: str | None = None
    caption_language: str | None = None


NO_LANGUAGES = Languages()

#: What a newcomer whose profile language cannot be transcribed is taken to speak.
SPOKEN_DEFAULT = "en"


@dataclass
class Outcome:
    """A transition's result: the state to write, its events and commands, what to answer."""

    state: CallState
    events: list[CallEvent] = field(default_factory=list)
    commands: list[CallCommand] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    #: The KV revision the store wrote (set by :mod:`gateway.call_store`).
    revision: int = 0

    @property
    def call_id(self) -> str:
        return self.state.call_id

    def set_status(self, status: CallStatus) -> None:
        before = self.state.status
        if before == status:
            return
        self.state = _replace(self.state, status=status)
        self.events.append(
            CallStatusChanged(call_id=self.call_id, from_status=before, to_status=status)
        )


# --- views (what clients see) ---------------------------------------------------------------
def participant_view(p: CallParticipantState) -> dict[str, Any]:
    return {
        "participantId": p.participant_id,
        "kind": p.kind,
        "userId": p.user_id,
        "displayName": p.display_name,
        "language": p.language,
        "captionLanguage": p.caption_language or p.language,
        "audioEnabled": p.audio_enabled,
        "videoEnabled": p.video_enabled,
        "connection": p.connection,
    }


def call_view(state: CallState) -> dict[str, Any]:
    return {
        "callId": state.call_id,
        "conversationId": state.conversation_id,
        "conversationType": state.conversation_type,
        "status": state.status,
        "mode": state.mode,
        "media": state.media,
        "initiatorUserId": state.initiator_user_id,
        "createdAt": state.created_at,
        "startedAt": state.started_at,
        "endedAt": state.ended_at,
        "endReason": state.end_reason,
        "epoch": state.epoch,
        "mediaNodeId": state.media_node_id,
        "migration": (
            {
                "epoch": state.migration.epoch,
                "fromMode": state.migration.from_mode,
                "toMode": state.migration.to_mode,
            }
            if state.migration is not None
            else None
        ),
        "transcription": state.transcription,
        "participants": [participant_view(p) for p in state.participants],
        "invitees": [{"userId": i.user_id, "status": i.status} for i in state.invitees],
    }


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find_participant(state: CallState, participant_id: str) -> CallParticipantState | None:
    for p in state.participants:
        if p.participant_id == participant_id:
            return p
    return None


def participant_of(state: CallState, principal_id: str) -> CallParticipantState | None:
    for p in state.participants:
        if p.principal_id == principal_id:
            return p
    return None


def event_participant(p: CallParticipantState) -> Participant:
    return Participant(
        participant_id=p.participant_id,
        kind=p.kind,
        user_id=p.user_id,
        display_name=p.display_name,
        language=p.language,
        caption_language=p.caption_language,
        principal_id=p.principal_id,
    )


def _new_participant(
    who: Principal,
    participant_id: str,
    now: float,
    resume_token: str,
    languages: Languages = NO_LANGUAGES,
) -> CallParticipantState:
    spoken, reads = _first_languages(who.language, languages)
    return CallParticipantState(
        participant_id=participant_id,
        kind=who.kind,
        principal_id=who.principal_id,
        user_id=who.user_id,
        display_name=who.display_name,
        language=spoken,
        caption_language=reads,
        joined_at=now,
        last_seen_at=now,
        resume_token_sha256=hash_token(resume_token),
    )


def _first_languages(profile: str, asked: Languages) -> tuple[str, str | None]:
    """A newcomer's languages: what it asked for, else its token's (profile) language.

    A profile language speech recognition does not know (``eo``, ``ast``: a translator
    writes them, Whisper does not hear them) would dead-letter every chunk: it becomes the
    caption language and the participant speaks :data:`SPOKEN_DEFAULT` until it says what
    it speaks (``call:set-language``); the call's state shows both. A code nobody knows
    at all is dropped for the default.
    """
    if asked.language is not None or is_spoken(profile):
        return asked.language or profile, asked.caption_language
    reads = asked.caption_language
    if reads is None and is_readable(profile):
        reads = profile
    return SPOKEN_DEFAULT, reads


def _require_live(state: CallState) -> None:
    if state.status == "ended":
        raise CallError("call_ended", "the call has ended")


# --- transitions --------------------------------------------------------------------------
def start_call(
    *,
    call_id: str,
    conversation: ConversationRecord,
    initiator: Principal,
    participant_id: str,
    media: MediaKind,
    now: float,
    timers: Timers,
    resume_token: str,
    languages: Languages = NO_LANGUAGES,
) -> Outcome:
    """A new call: the initiator is in, every other member is rung."""
    me = _new_participant(initiator, participant_id, now, resume_token, languages)
    invitees = [
        CallInvitee(user_id=m.user_id)
        for m in conversation.members
        if m.user_id != initiator.principal_id
    ]
    state = CallState(
        call_id=call_id,
        conversation_id=conversation.conversation_id,
        conversation_type=conversation.type,
        status="initiated",
        media=media,
        initiator_user_id=initiator.principal_id,
        created_at=now,
        ring_deadline_at=now + timers.ring_timeout_s,
        max_end_at=now + timers.max_duration_s,
        heartbeat_timeout_s=timers.heartbeat_timeout_s,
        reconnect_grace_s=timers.reconnect_grace_s,
        participants=[me],
        invitees=invitees,
        updated_at=now,
    )
    out = Outcome(state)
    out.events.append(
        CallInitiated(
            call_id=call_id,
            conversation_id=conversation.conversation_id,
            conversation_type=conversation.type,
            initiator=event_participant(me),
            media=media,
        )
    )
    out.events.append(
        ParticipantJoined(call_id=call_id, participant=event_participant(me), active_count=1)
    )
    out.set_status("ringing")
    if invitees:
        out.events.append(
            CallRinging(
                call_id=call_id,
                ringing_user_ids=[i.user_id for i in invitees],
                ring_timeout_s=timers.ring_timeout_s,
                conversation_id=conversation.conversation_id,
                conversation_type=conversation.type,
                media=media,
                caller=event_participant(me),
            )
        )
    out.result = {"participantId": me.participant_id}
    return out


def join(
    state: CallState,
    who: Principal,
    *,
    participant_id: str,
    now: float,
    resume_token: str,
    max_participants: int,
    may_join: bool,
    languages: Languages = NO_LANGUAGES,
) -> Outcome:
    """``who`` enters the call (an accept if it was being rung).

    A person already in the call rebinds (a second tab, or the REST initiator's socket):
    same participant, new resume token. ``participant_id`` is the id a newcomer gets;
    ``may_join`` is the caller's membership verdict; ``languages`` what the newcomer (or
    the one rebinding) speaks and reads.
    """
    _require_live(state)
    out = Outcome(state)
    existing = participant_of(state, who.principal_id)
    if existing is not None:
        _reconnect(out, existing, resume_token, now=now)
        _change_languages(out, existing.participant_id, languages)
        out.result = {"participantId": existing.participant_id, "rebound": True}
        return out
    if not may_join:
        raise CallError("forbidden", "not a member of this conversation")
    if state.conversation_type == "DIRECT" and who.kind == "guest":
        raise CallError("forbidden", "a DIRECT conversation never admits a guest")
    limit = 2 if state.conversation_type == "DIRECT" else max_participants
    if len(state.participants) >= limit:
        raise CallError("conflict", f"the call is full ({limit} participants)")
    me = _new_participant(who, participant_id, now, resume_token, languages)
    was_invited = False
    invitees = []
    for inv in state.invitees:
        if inv.user_id == who.principal_id and inv.status in ("ringing", "missed", "declined"):
            was_invited = inv.status == "ringing"
            invitees.append(_replace(inv, status="accepted"))
        else:
            invitees.append(inv)
    out.state = _replace(state, participants=[*state.participants, me], invitees=invitees)
    count = len(out.state.participants)
    out.events.append(
        ParticipantJoined(
            call_id=state.call_id,
            participant=event_participant(me),
            active_count=count,
            answered_ring=was_invited,
        )
    )
    if was_invited:
        out.events.append(
            RingEnded(call_id=state.call_id, user_ids=[who.principal_id], outcome="accepted")
        )
    _stop_ring_clock_if_idle(out)
    if count >= 2 and state.status in ("initiated", "ringing"):
        out.state = _replace(out.state, started_at=now)
        out.set_status("active")
    out.result = {"participantId": me.participant_id, "accepted": was_invited}
    return out


def resume(
    state: CallState,
    resume_token: str,
    *,
    now: float,
    new_token: str,
    languages: Languages = NO_LANGUAGES,
) -> Outcome:
    """A reconnecting socket takes its participant's place back (same id, media, language,
    unless ``languages`` says otherwise)."""
    _require_live(state)
    digest = hash_token(resume_token)
    for p in state.participants:
        if p.resume_token_sha256 == digest:
            break
    else:
        raise CallError("forbidden", "the resume token is not valid for this call")
    out = Outcome(state)
    _reconnect(out, p, new_token, now=now)
    _change_languages(out, p.participant_id, languages)
    out.result = {"participantId": p.participant_id, "resumed": True, "principalId": p.principal_id}
    return out


def decline(state: CallState, user_id: str, *, now: float) -> Outcome:
    """A rung member declines: only that person in a GROUP; the whole call in a DIRECT."""
    _require_live(state)
    if not any(i.user_id == user_id and i.status == "ringing" for i in state.invitees):
        raise CallError("conflict", "you are not being rung for this call")
    out = Outcome(state)
    _set_invitees(out, [user_id], "declined")
    _stop_ring_clock_if_idle(out)
    if state.conversation_type == "DIRECT" or (
        state.status in ("initiated", "ringing") and not _ringing(out.state)
    ):
        _end(out, "declined", now=now, by=None)
    return out


def leave(
    state: CallState,
    participant_id: str,
    reason: LeaveReason,
    *,
    now: float,
    by: str | None = None,
) -> Outcome:
    """One participant stops being in the call; the call ends if the rules say so."""
    _require_live(state)
    out = Outcome(state)
    _leave(out, participant_id, reason, now=now, by=by)
    return out


def end(state: CallState, reason: EndReason, *, now: float, by: str | None) -> Outcome:
    """End the call for everyone."""
    _require_live(state)
    out = Outcome(state)
    _end(out, reason, now=now, by=by)
    return out


def set_media(
    state: CallState,
    participant_id: str,
    *,
    audio: bool | None = None,
    video: bool | None = None,
    now: float,
) -> Outcome | None:
    _require_live(state)
    p = find_participant(state, participant_id)
    if p is None:
        raise CallError("not_in_call", "you are not in this call")
    new_audio = p.audio_enabled if audio is None else audio
    new_video = p.video_enabled if video is None else video
    if (new_audio, new_video) == (p.audio_enabled, p.video_enabled):
        return None
    out = Outcome(state)
    _put_participant(out, _replace(p, audio_enabled=new_audio, video_enabled=new_video))
    out.events.append(
        MediaStateChanged(
            call_id=state.call_id,
            participant_id=participant_id,
            audio_enabled=new_audio,
            video_enabled=new_video,
        )
    )
    return out


def set_transcription(
    state: CallState, participant_id: str, enabled: bool, *, now: float
) -> Outcome | None:
    """Any participant turns live transcription and captions on or off for the whole call
    (``None``: it already was)."""
    _require_live(state)
    if find_participant(state, participant_id) is None:
        raise CallError("not_in_call", "you are not in this call")
    if state.transcription == enabled:
        return None
    out = Outcome(_replace(state, transcription=enabled, updated_at=now))
    out.events.append(
        TranscriptionChanged(
            call_id=state.call_id, enabled=enabled, by_participant_id=participant_id
        )
    )
    return out


def set_language(
    state: CallState, participant_id: str, languages: Languages, *, now: float
) -> Outcome | None:
    """A participant changes what it speaks and/or reads, mid-call (``None``: no change)."""
    _require_live(state)
    if find_participant(state, participant_id) is None:
        raise CallError("not_in_call", "you are not in this call")
    out = Outcome(state)
    _change_languages(out, participant_id, languages)
    if not out.events:
        return None
    out.state = _replace(out.state, updated_at=now)
    return out


def set_captions_uplink(
    state: CallState, participant_id: str, enabled: bool, *, now: float
) -> Outcome | None:
    """A participant whose browser cannot transcribe asks for an audio-only uplink to a
    media node (or gives it up); ``None``: nothing changes.

    Asking needs transcription on (there is nothing to transcribe for otherwise); the wish
    is kept while the participant is in the call, also while the call is on the SFU (where
    its call session is transcribed instead) or transcription is off for a while.
    """
    _require_live(state)
    if find_participant(state, participant_id) is None:
        raise CallError("not_in_call", "you are not in this call")
    if enabled and not state.transcription:
        raise CallError("conflict", "transcription is off in this call; turn it on first")
    wanted = participant_id in state.captions_uplinks
    if wanted == enabled:
        return None
    uplinks = (
        [*state.captions_uplinks, participant_id]
        if enabled
        else [p for p in state.captions_uplinks if p != participant_id]
    )
    out = Outcome(_replace(state, captions_uplinks=uplinks, updated_at=now))
    out.events.append(
        CaptionsUplinkChanged(call_id=state.call_id, participant_id=participant_id, enabled=enabled)
    )
    return out


def set_captions_node(state: CallState, node_id: str | None) -> Outcome | None:
    """The mode selector places the call's captions uplinks on ``node_id`` (``None``:
    releases them); ``None`` when that is already so."""
    if state.captions_node_id == node_id or (state.status == "ended" and node_id is not None):
        return None
    out = Outcome(_replace(state, captions_node_id=node_id))
    out.events.append(
        CaptionsNodeChanged(
            call_id=state.call_id, node_id=node_id, previous_node_id=state.captions_node_id
        )
    )
    return out


def disconnect(state: CallState, participant_id: str, *, now: float) -> Outcome | None:
    """The participant's socket went away: the grace period starts."""
    if state.status == "ended":
        return None
    p = find_participant(state, participant_id)
    if p is None or p.connection == "reconnecting":
        return None
    out = Outcome(state)
    _put_participant(out, _replace(p, connection="reconnecting", disconnected_at=now))
    out.events.append(
        ParticipantDisconnected(
            call_id=state.call_id, participant_id=participant_id, grace_s=state.reconnect_grace_s
        )
    )
    if out.state.status == "active":
        out.set_status("reconnecting")
    return out


Presence = Mapping[str, float]
"""Last sign of life per participant id (heartbeats, from the ``presence`` bucket)."""

_NO_PRESENCE: Presence = {}


def last_seen(p: CallParticipantState, presence: Presence) -> float:
    """The later of the participant's last state change and its last heartbeat."""
    return max(p.last_seen_at, presence.get(p.participant_id, 0.0))


def next_deadline(state: CallState, presence: Presence = _NO_PRESENCE) -> float | None:
    """The earliest time at which :func:`apply_due` has something to do."""
    if state.status == "ended":
        return None
    times = [state.max_end_at]
    if state.ring_deadline_at is not None:
        times.append(state.ring_deadline_at)
    for p in state.participants:
        if p.connection == "reconnecting" and p.disconnected_at is not None:
            times.append(p.disconnected_at + state.reconnect_grace_s)
        else:
            times.append(last_seen(p, presence) + state.heartbeat_timeout_s)
    return min(times)


def apply_due(state: CallState, *, now: float, presence: Presence = _NO_PRESENCE) -> Outcome | None:
    """Apply every timer that is due at ``now``; ``None`` if none is.

    ``presence`` holds the participants' last heartbeats (read by the sweeper).
    """
    if state.status == "ended":
        return None
    deadline = next_deadline(state, presence)
    if deadline is None or deadline > now:
        return None
    out = Outcome(state)
    if now >= state.max_end_at:
        _end(out, "max_duration", now=now, by=None)
        return out
    for p in list(state.participants):
        if out.state.status == "ended":
            break
        if p.connection == "reconnecting" and p.disconnected_at is not None:
            if now >= p.disconnected_at + state.reconnect_grace_s:
                _leave(out, p.participant_id, "connection_lost", now=now, by=None)
        elif now >= last_seen(p, presence) + state.heartbeat_timeout_s:
            _leave(out, p.participant_id, "heartbeat_timeout", now=now, by=None)
    if (
        out.state.status != "ended"
        and out.state.ring_deadline_at is not None
        and now >= out.state.ring_deadline_at
    ):
        _set_invitees(out, _ringing(out.state), "missed")
        out.state = _replace(out.state, ring_deadline_at=None)
        if out.state.status in ("initiated", "ringing"):
            _end(out, "missed", now=now, by=None)
    return out if out.events or out.state != state else None


# --- helpers ------------------------------------------------------------------------------
def _reconnect(out: Outcome, p: CallParticipantState, token: str, *, now: float) -> None:
    """Bind ``p`` to a new socket with a fresh resume token (announcing a resumption)."""
    updated = _replace(
        p,
        connection="connected",
        disconnected_at=None,
        last_seen_at=now,
        resume_token_sha256=hash_token(token),
    )
    _put_participant(out, updated)
    if p.connection == "reconnecting":
        out.events.append(
            ParticipantResumed(
                call_id=out.call_id,
                participant_id=p.participant_id,
                participant=event_participant(updated),
                audio_enabled=updated.audio_enabled,
                video_enabled=updated.video_enabled,
            )
        )
        _settle_reconnecting(out)


def _change_languages(out: Outcome, participant_id: str, languages: Languages) -> None:
    """Apply a language choice to a participant of ``out`` (an event if anything changed)."""
    if languages == NO_LANGUAGES:
        return
    p = find_participant(out.state, participant_id)
    if p is None:
        return
    spoken = languages.language or p.language
    reads = p.caption_language if languages.caption_language is None else languages.caption_language
    if (spoken, reads) == (p.language, p.caption_language):
        return
    _put_participant(out, _replace(p, language=spoken, caption_language=reads))
    out.events.append(
        ParticipantLanguageChanged(
            call_id=out.call_id,
            participant_id=participant_id,
            language=spoken,
            caption_language=reads,
        )
    )


def _ringing(state: CallState) -> list[str]:
    return [i.user_id for i in state.invitees if i.status == "ringing"]


def _put_participant(out: Outcome, updated: CallParticipantState) -> None:
    out.state = _replace(
        out.state,
        participants=[
            updated if p.participant_id == updated.participant_id else p
            for p in out.state.participants
        ],
    )


def _set_invitees(out: Outcome, user_ids: list[str], outcome: RingOutcome) -> None:
    if not user_ids:
        return
    wanted = set(user_ids)
    out.state = _replace(
        out.state,
        invitees=[
            _replace(i, status=outcome) if i.user_id in wanted and i.status == "ringing" else i
            for i in out.state.invitees
        ],
    )
    out.events.append(RingEnded(call_id=out.call_id, user_ids=sorted(wanted), outcome=outcome))


def _stop_ring_clock_if_idle(out: Outcome) -> None:
    if not _ringing(out.state) and out.state.status != "initiated":
        out.state = _replace(out.state, ring_deadline_at=None)


def _settle_reconnecting(out: Outcome) -> None:
    if out.state.status == "reconnecting" and all(
        p.connection == "connected" for p in out.state.participants
    ):
        out.set_status("active")


def _leave(
    out: Outcome, participant_id: str, reason: LeaveReason, *, now: float, by: str | None
) -> None:
    state = out.state
    p = find_participant(state, participant_id)
    if p is None:
        raise CallError("not_in_call", "that participant is not in this call")
    remaining = [q for q in state.participants if q.participant_id != participant_id]
    out.state = _replace(
        state,
        participants=remaining,
        captions_uplinks=[q for q in state.captions_uplinks if q != participant_id],
    )
    out.events.append(
        ParticipantLeft(
            call_id=state.call_id,
            participant_id=participant_id,
            reason=reason,
            active_count=len(remaining),
        )
    )
    _settle_reconnecting(out)
    never_answered = state.status in ("initiated", "ringing")
    if state.conversation_type == "DIRECT":
        if never_answered:
            _end(out, "missed", now=now, by=by or participant_id)
        elif len(remaining) < 2:
            _end(out, LEAVE_TO_END[reason], now=now, by=by or participant_id)
    elif not remaining:
        if never_answered:
            _end(out, "missed", now=now, by=by or participant_id)
        else:
            _end(out, LEAVE_TO_END[reason], now=now, by=by or participant_id)


def _end(out: Outcome, reason: EndReason, *, now: float, by: str | None) -> None:
    state = out.state
    ringing = _ringing(state)
    if ringing:
        _set_invitees(out, ringing, "missed" if reason == "missed" else "cancelled")
    for p in state.participants:
        out.events.append(
            ParticipantLeft(
                call_id=state.call_id,
                participant_id=p.participant_id,
                reason="call_ended",
                active_count=0,
            )
        )
    m = state.migration
    if m is not None:
        # Every migration_started gets its mode_changed, even when the call ends under it.
        out.events.append(
            CallModeChanged(
                call_id=state.call_id,
                from_mode=m.from_mode,
                to_mode=m.to_mode,
                epoch=m.epoch,
                duration_ms=round(max(0.0, now - m.started_at) * 1000, 1),
                max_gap_ms=m.max_gap_ms,
                outcome="rolled_back",
                reason="call_ended",
                node_id=m.node_id,
            )
        )
    duration = now - state.started_at if state.started_at is not None else 0.0
    out.state = _replace(
        out.state,
        migration=None,
        prewarm_node_id=None,
        participants=[],
        captions_uplinks=[],
        ring_deadline_at=None,
        ended_at=now,
        end_reason=reason,
        ended_by=by,
    )
    out.set_status("ended")
    out.events.append(
        CallEnded(call_id=state.call_id, reason=reason, duration_s=round(duration, 3), ended_by=by)
    )
