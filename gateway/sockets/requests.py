"""What clients send over Socket.IO, decoded into typed requests (camelCase on the wire).

Strict types, unknown fields ignored; a payload that does not decode is a
``bad_request`` refusal naming the field, never echoing the value.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from gateway.delivery import SocketSession
from gateway.errors import CallError
from gateway.state_machine import Languages
from gateway.tokens import Principal
from gateway.validation import ClientId, check_caption_language, check_spoken_language
from schemas.call_events import CallMode, MediaKind
from schemas.media import SessionPurpose

Ack = dict[str, Any]
Handler = Callable[[SocketSession, Principal, Any], Awaitable[Ack]]
Handlers = Mapping[str, Handler]

T = TypeVar("T")

SignalType = Literal["offer", "answer", "ice-candidate", "ice-restart"]


def ok(**data: Any) -> Ack:
    return {"ok": True, **data}


def decode(data: Any, type_: type[T]) -> T:
    if not isinstance(data, dict):
        raise CallError("bad_request", "the payload must be a JSON object")
    try:
        return msgspec.convert(data, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise CallError("bad_request", str(exc)[:200]) from None


def require_bound(session: SocketSession, call_id: str) -> str:
    """The participant this socket is bound to in ``call_id``, else ``not_in_call``."""
    if session.call_id != call_id or session.participant_id is None:
        raise CallError("not_in_call", "this socket is not in that call")
    return session.participant_id


class Request(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


#: A language code as a client sends it (checked further by :mod:`gateway.validation`).
LanguageCode = Annotated[str, msgspec.Meta(max_length=16)]


class LanguageOptions(Request, frozen=True, kw_only=True):
    """What the participant speaks and reads captions in (absent: as before; for a
    newcomer, the token's language, reading what it speaks)."""

    language: LanguageCode | None = None
    caption_language: LanguageCode | None = None

    def languages(self) -> Languages:
        """The choice, checked (``bad_request`` for an unknown or malformed code)."""
        return Languages(
            language=check_spoken_language(self.language) if self.language else None,
            caption_language=(
                check_caption_language(self.caption_language) if self.caption_language else None
            ),
        )


class InitiateRequest(LanguageOptions, frozen=True, kw_only=True):
    conversation_id: ClientId
    media: MediaKind = "video"


class CallRef(Request, frozen=True, kw_only=True):
    call_id: ClientId


class JoinRequest(LanguageOptions, frozen=True, kw_only=True):
    call_id: ClientId
    resume_token: str | None = None


class LeaveRequest(Request, frozen=True, kw_only=True):
    call_id: ClientId
    participant_id: ClientId | None = None


class SignalRequest(Request, frozen=True, kw_only=True):
    call_id: ClientId
    to: ClientId
    type: SignalType
    sdp: str | None = None
    candidate: dict[str, Any] | None = None
    #: Clients need not send it; if they do it must be their own participant id.
    from_: str | None = msgspec.field(default=None, name="from")


class ToggleRequest(Request, frozen=True, kw_only=True):
    call_id: ClientId
    enabled: bool


class IceRequest(Request, frozen=True, kw_only=True):
    call_id: ClientId | None = None


class SfuSdpRequest(Request, frozen=True, kw_only=True):
    """``call:sfu-publish`` (the client's uplink offer) / ``call:sfu-downlink-answer``.

    ``purpose``: ``captions`` publishes the microphone on the participant's audio-only
    captions uplink (``call:captions-uplink``) instead of its call session."""

    call_id: ClientId
    sdp: str
    purpose: SessionPurpose = "call"


class SfuRef(Request, frozen=True, kw_only=True):
    """``call:sfu-downlink``: ask for the node's offer of this participant's slots."""

    call_id: ClientId


class SfuPreferences(Request, frozen=True, kw_only=True):
    call_id: ClientId
    pinned: Annotated[list[ClientId], msgspec.Meta(max_length=16)] = msgspec.field(
        default_factory=list
    )
    tiles: Annotated[int, msgspec.Meta(ge=0, le=16)] | None = None


class ModeSwitched(Request, frozen=True, kw_only=True):
    """``call:mode-switched``: the new path of migration ``epoch`` carries media (``ok``),
    or could not be brought up (``ok`` false, with a short ``reason``)."""

    call_id: ClientId
    epoch: Annotated[int, msgspec.Meta(ge=0)]
    mode: CallMode
    ok: bool = True
    reason: Annotated[str, msgspec.Meta(max_length=64)] = ""
    max_gap_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 0.0


class MediaHealth(Request, frozen=True, kw_only=True):
    """``call:media-health``: the direct path to ``peerId`` failed (ICE failed or stuck,
    no frames decoding): the call falls back to the SFU."""

    call_id: ClientId
    state: Literal["failed"]
    peer_id: ClientId | None = None
    reason: Annotated[str, msgspec.Meta(max_length=64)] = ""


class SetTranscriptionRequest(Request, frozen=True, kw_only=True):
    """``call:set-transcription``: live transcription and captions on or off for the call."""

    call_id: ClientId
    enabled: bool


class SetLanguageRequest(LanguageOptions, frozen=True, kw_only=True):
    """``call:set-language``: what I speak and/or what I read, from now on."""

    call_id: ClientId


#: A client's utterance id (the gateway prefixes it with the participant id).
UtteranceId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: Text a browser recognised (the bound of every caption).
TranscriptText = Annotated[str, msgspec.Meta(max_length=2000)]


class TranscriptionRequest(Request, frozen=True, kw_only=True):
    """``call:transcription``: the browser's own speech recognition of one utterance."""

    call_id: ClientId
    utterance_id: UtteranceId
    text: TranscriptText
    is_final: bool
    revision: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    language: LanguageCode | None = None


class CaptionsUplinkRequest(Request, frozen=True, kw_only=True):
    """``call:captions-uplink``: ask for (or, ``enabled`` false, give up) an audio-only
    uplink to a media node, whose tap transcribes the microphone (P2P)."""

    call_id: ClientId
    enabled: bool = True
