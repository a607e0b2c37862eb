"""What clients send over Socket.IO, decoded into typed requests (camelCase on the wire).

Strict types, unknown fields ignored; a payload that does not decode is a
``bad_request`` refusal naming the field, never echoing the value.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

import msgspec

from gateway.delivery import SocketSession
from gateway.errors import CallError
from gateway.tokens import Principal
from gateway.validation import ClientId
from schemas.call_events import MediaKind

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
