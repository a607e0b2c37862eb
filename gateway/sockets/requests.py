"""What clients send over Socket.IO, decoded into typed requests (camelCase on the wire).

Strict types, unknown fields ignored; a payload that does not decode is a
``bad_request`` refusal naming the field, never echoing the value.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from gateway.delivery import SocketSession
from gateway.errors import CallError
from gateway.tokens import Principal
from gateway.validation import ClientId, ResumeToken
from schemas.call_events import CallMode, MediaKind

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


class InitiateRequest(Request, frozen=True, kw_only=True):
    conversation_id: ClientId
    media: MediaKind = "video"


class CallRef(Request, frozen=True, kw_only=True):
    call_id: ClientId


class JoinRequest(Request, frozen=True, kw_only=True):
    call_id: ClientId
    resume_token: ResumeToken | None = None


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
    """``call:request-ice-servers``: credentials for the call this socket is in."""

    call_id: ClientId


class RefreshToken(Request, frozen=True, kw_only=True):
    """``call:refresh-token``: a fresh token of the same person, before the old expires."""

    token: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]


class SfuSdpRequest(Request, frozen=True, kw_only=True):
    """``call:sfu-publish`` (the client's uplink offer) / ``call:sfu-downlink-answer``."""

    call_id: ClientId
    sdp: str


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
