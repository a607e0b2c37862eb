"""Socket notices, projected from call events (pure).

Every gateway reads the call event stream and turns each event into the Socket.IO events
its own sockets must see: the sockets bound to the call (optionally all but the actor, or
only one participant), and, for rings, the sockets of the people rung. Whoever made the
change (a socket handler, REST, the sweeper, the mode selector, another gateway) and
whether its writer crashed before publishing (the sweeper republishes from the outbox), the
same events give the same notices.

| event | notice | to |
|---|---|---|
| ``call.ringing`` | ``call:incoming`` | the people rung |
| ``call.ring_ended`` | ``call:ring-stopped`` (``call:missed`` when missed) | those people |
| ``call.ring_ended`` (declined) | ``call:declined`` | the call |
| ``participant.joined`` | ``call:participant-joined`` (``call:accepted``) | all but the newcomer |
| ``participant.left`` | ``call:participant-left`` | the call (a removed person too) |
| ``participant.disconnected`` | ``call:participant-disconnected`` | all but that person |
| ``participant.resumed`` | ``call:participant-resumed`` | all but that person |
| ``media.state_changed`` | ``call:media-toggled`` | all but that person |
| ``media.active_speaker_changed`` | ``call:active-speaker`` | the call |
| ``call.migration_started`` | ``call:migration-started`` | the call |
| ``call.mode_changed`` | ``call:mode-changed`` | the call |
| ``call.transcription_changed`` | ``call:transcription-changed`` | the call |
| ``participant.language_changed`` | ``call:participant-language`` | the call |
| ``call.ended`` | ``call:ended`` | the call (whose sockets are then unbound) |
"""

from dataclasses import dataclass
from typing import Any

from schemas.call_events import (
    ActiveSpeakerChanged,
    AnyCallEvent,
    CallEnded,
    CallModeChanged,
    CallRinging,
    MediaStateChanged,
    MigrationStarted,
    Participant,
    ParticipantDisconnected,
    ParticipantJoined,
    ParticipantLanguageChanged,
    ParticipantLeft,
    ParticipantResumed,
    RingEnded,
    TranscriptionChanged,
)


@dataclass(frozen=True, slots=True)
class Notice:
    """One Socket.IO event and who, among a gateway's sockets, receives it.

    With ``users`` it goes to every socket of those principals; otherwise to the sockets
    bound to ``call_id``, all but ``exclude`` (a participant id) or only ``only``.
    """

    event: str
    payload: dict[str, Any]
    call_id: str
    exclude: str | None = None
    only: str | None = None
    users: tuple[str, ...] = ()


def participant_payload(p: Participant) -> dict[str, Any]:
    return {
        "participantId": p.participant_id,
        "kind": p.kind,
        "userId": p.user_id,
        "displayName": p.display_name,
        "language": p.language,
        "captionLanguage": p.caption_language or p.language,
        "audioEnabled": True,
        "videoEnabled": True,
        "connection": "connected",
    }


def project(event: AnyCallEvent) -> list[Notice]:
    """The notices one event gives (empty for events sockets need not see)."""
    call_id = event.call_id
    base = {"callId": call_id}
    match event:
        case CallRinging():
            caller = event.caller
            incoming = {
                **base,
                "conversationId": event.conversation_id,
                "conversationType": event.conversation_type,
                "media": event.media,
                "caller": {
                    "userId": caller.user_id if caller else None,
                    "displayName": caller.display_name if caller else "",
                },
                "ringTimeoutS": event.ring_timeout_s,
            }
            return [Notice("call:incoming", incoming, call_id, users=tuple(event.ringing_user_ids))]
        case RingEnded():
            users = tuple(event.user_ids)
            if event.outcome == "missed":
                return [Notice("call:missed", base, call_id, users=users)]
            notices = [
                Notice(
                    "call:ring-stopped", {**base, "outcome": event.outcome}, call_id, users=users
                )
            ]
            if event.outcome == "declined":
                notices += [
                    Notice("call:declined", {**base, "userId": u}, call_id) for u in event.user_ids
                ]
            return notices
        case ParticipantJoined():
            p = event.participant
            joined = {
                **base,
                "participant": participant_payload(p),
                "activeCount": event.active_count,
            }
            notices = [Notice("call:participant-joined", joined, call_id, exclude=p.participant_id)]
            if event.answered_ring:
                accepted = {
                    **base,
                    "callee": {"userId": p.user_id, "displayName": p.display_name},
                    "participantId": p.participant_id,
                }
                notices.insert(
                    0, Notice("call:accepted", accepted, call_id, exclude=p.participant_id)
                )
            return notices
        case ParticipantLeft():
            if event.reason == "call_ended":
                return []  # call:ended says it once for everyone
            left = {
                **base,
                "participantId": event.participant_id,
                "reason": event.reason,
                "activeCount": event.active_count,
            }
            return [Notice("call:participant-left", left, call_id)]
        case ParticipantDisconnected():
            payload = {**base, "participantId": event.participant_id, "graceS": event.grace_s}
            return [
                Notice(
                    "call:participant-disconnected", payload, call_id, exclude=event.participant_id
                )
            ]
        case ParticipantResumed():
            payload = {**base, "participantId": event.participant_id}
            if event.participant is not None:
                resumed = participant_payload(event.participant)
                # A resumed participant kept its microphone and camera state; the joined
                # defaults (both on) would unmute them on everyone's screen.
                for key, known in (
                    ("audioEnabled", event.audio_enabled),
                    ("videoEnabled", event.video_enabled),
                ):
                    if known is None:
                        del resumed[key]  # unknown (an older event): clients keep theirs
                    else:
                        resumed[key] = known
                payload["participant"] = resumed
            return [
                Notice("call:participant-resumed", payload, call_id, exclude=event.participant_id)
            ]
        case MediaStateChanged():
            payload = {
                **base,
                "participantId": event.participant_id,
                "audioEnabled": event.audio_enabled,
                "videoEnabled": event.video_enabled,
            }
            return [Notice("call:media-toggled", payload, call_id, exclude=event.participant_id)]
        case ActiveSpeakerChanged():
            payload = {**base, "participantId": event.participant_id}
            return [Notice("call:active-speaker", payload, call_id)]
        case MigrationStarted():
            payload = {
                **base,
                "fromMode": event.from_mode,
                "toMode": event.to_mode,
                "epoch": event.epoch,
                "reason": event.reason,
            }
            return [Notice("call:migration-started", payload, call_id)]
        case CallModeChanged():
            payload = {
                **base,
                "mode": event.to_mode if event.outcome == "completed" else event.from_mode,
                "fromMode": event.from_mode,
                "toMode": event.to_mode,
                "epoch": event.epoch,
                "outcome": event.outcome,
                "reason": event.reason,
            }
            return [Notice("call:mode-changed", payload, call_id)]
        case TranscriptionChanged():
            payload = {**base, "enabled": event.enabled, "by": event.by_participant_id}
            return [Notice("call:transcription-changed", payload, call_id)]
        case ParticipantLanguageChanged():
            payload = {
                **base,
                "participantId": event.participant_id,
                "language": event.language,
                "captionLanguage": event.caption_language or event.language,
            }
            return [Notice("call:participant-language", payload, call_id)]
        case CallEnded():
            payload = {
                **base,
                "reason": event.reason,
                "durationS": event.duration_s,
                "endedBy": event.ended_by,
            }
            return [Notice("call:ended", payload, call_id)]
    return []
