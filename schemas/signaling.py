"""What one gateway asks another to push to a browser socket it holds.

A :class:`SocketDelivery` travels on ``user.<principal_id>.signal``; every gateway holding a
socket of that user (or guest) is subscribed while the socket is connected, and emits
``event`` with ``payload`` to the matching sockets. With ``participant_id`` set, only the
socket bound to that call participant receives it (signals: offers, answers, candidates).
Gateways never call each other over HTTP.
"""

from typing import Any

from schemas.ids import Id
from schemas.message import Message


class SocketDelivery(Message, frozen=True, kw_only=True, tag="socket.delivery"):
    """One Socket.IO event for the sockets of one person."""

    principal_id: Id
    #: The Socket.IO event name, e.g. ``call:signal`` or ``call:participant-joined``.
    event: str
    payload: dict[str, Any]
    call_id: Id | None = None
    #: Only the socket bound to this participant of ``call_id`` (None: every socket).
    participant_id: Id | None = None
    #: Publication time (Unix seconds), for relay latency measurements.
    sent_at: float = 0.0
