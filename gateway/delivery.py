"""Pushing events to browser sockets wherever they are connected, over NATS.

Each gateway subscribes to ``user.<principal_id>.signal`` while it holds at least one socket
of that user or guest. Anyone (this gateway or another) publishes a
:class:`SocketDelivery` there; the holding gateways emit it to the matching sockets. A
delivery bound to a participant reaches only the socket bound to that participant.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.subscription import Subscription

from gateway.state_machine import Notice
from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.logs import get_logger
from schemas.signaling import SocketDelivery

log = get_logger("gateway.delivery")

Emit = Callable[[str, dict[str, Any], str], Awaitable[None]]
"""``emit(event, payload, sid)``: push one Socket.IO event to one local socket."""


@dataclass
class SocketSession:
    """What this gateway knows of one connected socket."""

    sid: str
    principal_id: str
    call_id: str | None = None
    participant_id: str | None = None
    #: Hash of the resume token this socket was bound with (a rebind elsewhere changes it).
    resume_hash: str = ""
    #: Serializes this socket's events: they are handled in the order the client sent them
    #: (an offer before its candidates, mute before unmute), other sockets run in parallel.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)


@dataclass
class _Principal:
    sids: set[str] = field(default_factory=set)
    subscription: Subscription | None = None
    #: Set once the subscription is in place (concurrent attaches wait for the first one).
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Delivery:
    """Local socket registry plus the NATS subscriptions that feed it."""

    def __init__(self, bus: Bus, emit: Emit) -> None:
        self._bus = bus
        self._emit = emit
        self.sessions: dict[str, SocketSession] = {}
        self._principals: dict[str, _Principal] = {}
        self.delivered = 0
        self.dropped = 0

    # --- registry ------------------------------------------------------------------------
    async def attach(self, session: SocketSession) -> None:
        """Register a socket and make sure deliveries for its principal reach this gateway."""
        pid = session.principal_id
        self.sessions[session.sid] = session
        entry = self._principals.get(pid)
        if entry is not None:
            entry.sids.add(session.sid)
            await entry.ready.wait()  # another socket of this person is subscribing
            if entry.subscription is None and self._principals.get(pid) is not entry:
                await self.detach(session.sid)
                raise ConnectionError("could not subscribe to this person's deliveries")
            return
        entry = self._principals[pid] = _Principal(sids={session.sid})
        try:
            subscription = await self._bus.subscribe(
                subjects.user_signal(pid), SocketDelivery, self._on_delivery
            )
            await self._bus.nc.flush()
        except BaseException:
            if self._principals.get(pid) is entry:
                del self._principals[pid]
            self.sessions.pop(session.sid, None)
            raise
        finally:
            entry.ready.set()
        if self._principals.get(pid) is entry:
            entry.subscription = subscription
        else:  # every socket of this person left while we subscribed
            await _unsubscribe(subscription)

    async def detach(self, sid: str) -> SocketSession | None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return None
        entry = self._principals.get(session.principal_id)
        if entry is not None:
            entry.sids.discard(sid)
            if not entry.sids:
                del self._principals[session.principal_id]
                if entry.subscription is not None:
                    await _unsubscribe(entry.subscription)
        return session

    @property
    def subscription_count(self) -> int:
        """NATS subscriptions held for delivery (one per person with a socket here)."""
        return sum(1 for e in self._principals.values() if e.subscription is not None)

    def sockets_of(self, principal_id: str) -> list[SocketSession]:
        entry = self._principals.get(principal_id)
        if entry is None:
            return []
        return [self.sessions[s] for s in entry.sids if s in self.sessions]

    @property
    def socket_count(self) -> int:
        return len(self.sessions)

    # --- sending -------------------------------------------------------------------------
    async def send(
        self,
        principal_id: str,
        event: str,
        payload: dict[str, Any],
        *,
        call_id: str | None = None,
        participant_id: str | None = None,
    ) -> None:
        message = SocketDelivery(
            principal_id=principal_id,
            event=event,
            payload=payload,
            call_id=call_id,
            participant_id=participant_id,
            sent_at=time.time(),
        )
        await self._bus.publish(subjects.user_signal(principal_id), message)

    async def send_notices(self, call_id: str, notices: list[Notice]) -> None:
        for n in notices:
            await self.send(
                n.principal_id, n.event, n.payload, call_id=call_id, participant_id=n.participant_id
            )

    # --- receiving -----------------------------------------------------------------------
    async def _on_delivery(self, message: SocketDelivery, _: Incoming) -> None:
        matched = False
        for session in self.sockets_of(message.principal_id):
            if message.participant_id is not None and (
                session.call_id != message.call_id
                or session.participant_id != message.participant_id
            ):
                continue
            matched = True
            try:
                await self._emit(message.event, message.payload, session.sid)
                self.delivered += 1
            except Exception as exc:  # a socket closing under us
                log.debug("delivery.emit_failed", sid=session.sid, error=type(exc).__name__)
        if not matched:
            self.dropped += 1


async def _unsubscribe(subscription: Subscription) -> None:
    try:
        await subscription.unsubscribe()
    except Exception as exc:  # closed connection while draining
        log.debug("delivery.unsubscribe_failed", error=type(exc).__name__)
