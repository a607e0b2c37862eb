"""This gateway's sockets, and pushing events to sockets wherever they are connected.

The registry knows each local socket, whose it is (a user or guest: its principal) and the
call participant it is bound to, with two indexes: principal -> sockets and call ->
sockets. Notices projected from call events reach the local sockets of the call (or of the
people rung) through :meth:`Delivery.deliver_notice`; a per-call watcher
(:class:`CallWatch`) is told when a call gains its first local socket and loses its last,
so per-call subscriptions (commands, media-node events, captions) follow the sockets.

Each gateway also subscribes to ``user.<principal_id>.signal`` while it holds at least one
socket of that person. Anyone (this gateway or another) publishes a :class:`SocketDelivery`
there (a P2P signal for one participant); the holding gateways emit it to the matching
sockets. A delivery bound to a participant reaches only the socket bound to that participant.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.subscription import Subscription

from gateway.notices import Notice
from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.logs import get_logger
from schemas.signaling import SocketDelivery

log = get_logger("gateway.delivery")

Emit = Callable[[str, dict[str, Any], str], Awaitable[None]]
"""``emit(event, payload, sid)``: push one Socket.IO event to one local socket."""

CallWatch = Callable[[str, bool], None]
"""``watch(call_id, present)``: a call gained its first local socket (True) or lost its last."""

BindWatch = Callable[["SocketSession"], None]
"""``watch(session)``: a local socket was just bound to a participant of a call."""


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
    #: The last ``call:mode-switch`` (epoch, mode, session id) and ``call:sfu-prewarm``
    #: (session id) this socket was told, so each is said once per socket.
    told_switch: tuple[int, str, str | None] | None = None
    told_prewarm: str | None = None
    #: The captions uplink session (``call:captions-uplink``) this socket was told last.
    told_captions: str | None = None


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
        self._calls: dict[str, set[str]] = {}
        self._watchers: list[CallWatch] = []
        self._bind_watchers: list[BindWatch] = []
        self.delivered = 0
        self.dropped = 0

    def watch_calls(self, watcher: CallWatch) -> None:
        self._watchers.append(watcher)

    def watch_binds(self, watcher: BindWatch) -> None:
        self._bind_watchers.append(watcher)

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
            await self._bus.flush()
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
        self._unindex(session)
        entry = self._principals.get(session.principal_id)
        if entry is not None:
            entry.sids.discard(sid)
            if not entry.sids:
                del self._principals[session.principal_id]
                if entry.subscription is not None:
                    await _unsubscribe(entry.subscription)
        return session

    # --- binding sockets to call participants -------------------------------------------
    def bind(
        self, session: SocketSession, call_id: str, participant_id: str, resume_hash: str
    ) -> None:
        """Bind a socket to a participant (any other local socket of it is unbound)."""
        for other in list(self.sessions_in(call_id)):
            if other.sid != session.sid and other.participant_id == participant_id:
                self.unbind(other)
        if session.call_id != call_id:
            self.unbind(session)
        session.call_id = call_id
        session.participant_id = participant_id
        session.resume_hash = resume_hash
        session.told_switch = session.told_prewarm = session.told_captions = None
        sids = self._calls.setdefault(call_id, set())
        first = not sids
        sids.add(session.sid)
        if first:
            self._tell(call_id, True)
        for watcher in self._bind_watchers:
            try:
                watcher(session)
            except Exception as exc:
                log.exception("delivery.watcher_failed", call_id=call_id, error=type(exc).__name__)

    def unbind(self, session: SocketSession) -> None:
        self._unindex(session)
        session.call_id = session.participant_id = None

    def unbind_participant(self, call_id: str, participant_id: str) -> None:
        for session in list(self.sessions_in(call_id)):
            if session.participant_id == participant_id:
                self.unbind(session)

    def unbind_call(self, call_id: str) -> None:
        for session in list(self.sessions_in(call_id)):
            self.unbind(session)

    def _unindex(self, session: SocketSession) -> None:
        if session.call_id is None:
            return
        sids = self._calls.get(session.call_id)
        if sids is not None:
            sids.discard(session.sid)
            if not sids:
                del self._calls[session.call_id]
                self._tell(session.call_id, False)

    def _tell(self, call_id: str, present: bool) -> None:
        for watcher in self._watchers:
            try:
                watcher(call_id, present)
            except Exception as exc:  # one watcher's bug must not break binding
                log.exception("delivery.watcher_failed", call_id=call_id, error=type(exc).__name__)

    def sessions_in(self, call_id: str) -> list[SocketSession]:
        """The local sockets bound to participants of ``call_id``."""
        return [self.sessions[s] for s in self._calls.get(call_id, ()) if s in self.sessions]

    def session_of(self, call_id: str, participant_id: str) -> SocketSession | None:
        for session in self.sessions_in(call_id):
            if session.participant_id == participant_id:
                return session
        return None

    @property
    def calls_held(self) -> list[str]:
        return list(self._calls)

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

    async def deliver_notice(self, notice: Notice) -> int:
        """Emit a projected notice to the local sockets it is for; returns how many."""
        if notice.users:
            targets = [s for u in notice.users for s in self.sockets_of(u)]
        else:
            targets = [
                s
                for s in self.sessions_in(notice.call_id)
                if s.participant_id != notice.exclude
                and (notice.only is None or s.participant_id == notice.only)
            ]
        for session in targets:
            await self._emit_to(notice.event, notice.payload, session.sid)
        return len(targets)

    async def emit_to_participant(
        self, call_id: str, participant_id: str, event: str, payload: dict[str, Any]
    ) -> bool:
        """Emit to the local socket bound to one participant; False if none is here."""
        session = self.session_of(call_id, participant_id)
        if session is None:
            return False
        await self._emit_to(event, payload, session.sid)
        return True

    async def _emit_to(self, event: str, payload: dict[str, Any], sid: str) -> None:
        try:
            await self._emit(event, payload, sid)
            self.delivered += 1
        except Exception as exc:  # a socket closing under us
            log.debug("delivery.emit_failed", sid=sid, error=type(exc).__name__)

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
            await self._emit_to(message.event, message.payload, session.sid)
        if not matched:
            self.dropped += 1


async def _unsubscribe(subscription: Subscription) -> None:
    try:
        await subscription.unsubscribe()
    except Exception as exc:  # closed connection while draining
        log.debug("delivery.unsubscribe_failed", error=type(exc).__name__)
