"""This gateway's reading of the call event stream: one ordered consumer, many handlers.

Every gateway follows ``CALL_EVENTS`` from "now" with a JetStream ordered consumer (it
resumes after a reconnect without a gap) and hands each event, in stream order, to its
handlers: the notice projection, the media reconciler. A call's events arrive in ``seq``
order; an event whose ``seq`` is not past the last one seen for its call is a duplicate
(republished by a recovering sweeper) and is dropped.
"""

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from opentelemetry.trace import SpanKind

from gateway.delivery import Delivery
from gateway.notices import project
from schemas import subjects, telemetry
from schemas.bus import Bus, continue_trace
from schemas.call_events import AnyCallEvent, CallEnded, ParticipantLeft
from schemas.codec import decoder_for
from schemas.logs import get_logger

log = get_logger("gateway.event_feed")

EventHandler = Callable[[AnyCallEvent], Awaitable[None]]

#: How often the server says "still here" on an idle feed (see :meth:`EventFeed.start`).
_IDLE_HEARTBEAT_S = 1.0

#: Calls whose last seq is remembered for de-duplication (oldest forgotten first).
_SEEN_CALLS = 20_000


class EventFeed:
    """Follows ``call.evt.>`` and dispatches each new event to every handler, in order."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._handlers: list[EventHandler] = []
        self._decoder: msgspec.json.Decoder[AnyCallEvent] = decoder_for(AnyCallEvent)
        self._last_seq: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._subscription: object | None = None
        self.ready = asyncio.Event()
        self.received = 0
        self.duplicates = 0

    def add(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    async def start(self) -> None:
        self._subscription = await self._bus.js.subscribe(
            subjects.ALL_CALL_EVENTS,
            stream=subjects.CALL_EVENTS_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            # nats-py rebuilds an ordered consumer after two missed idle heartbeats: with
            # its 5 s default a gateway whose consumer went down with a cluster node heard
            # no events for 10-20 s; 1 s brings that to about 2 s.
            idle_heartbeat=_IDLE_HEARTBEAT_S,
            cb=self._on_message,
        )
        self.ready.set()

    async def stop(self) -> None:
        sub = self._subscription
        self._subscription = None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()  # type: ignore[attr-defined]

    def _fresh(self, event: AnyCallEvent) -> bool:
        if event.seq <= 0:
            return True  # advisory: no sequence to order by
        last = self._last_seq.get(event.call_id, 0)
        if event.seq <= last:
            self.duplicates += 1
            return False
        self._last_seq[event.call_id] = event.seq
        self._last_seq.move_to_end(event.call_id)
        if len(self._last_seq) > _SEEN_CALLS:
            self._last_seq.popitem(last=False)
        return True

    async def _on_message(self, msg: Msg) -> None:
        self.received += 1
        try:
            event = self._decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("event_feed.undecodable", subject=msg.subject, reason=str(exc)[:200])
            return
        if not self._fresh(event):
            return
        if telemetry.STATE.active:
            # The handlers' own requests (a media session opened) join the writer's trace.
            with continue_trace(msg, "process", SpanKind.CONSUMER):
                await self._dispatch(event)
        else:
            await self._dispatch(event)

    async def _dispatch(self, event: AnyCallEvent) -> None:
        for handler in self._handlers:
            try:
                await handler(event)
            except Exception as exc:  # one handler's failure must not starve the others
                log.exception(
                    "event_feed.handler_failed",
                    call_id=event.call_id,
                    event_type=type(event).__name__,
                    error=type(exc).__name__,
                )


class NoticeProjector:
    """Turns each event into notices for this gateway's sockets (see :mod:`gateway.notices`),
    then unbinds the sockets of people who left and of calls that ended."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self.notices = 0

    async def __call__(self, event: AnyCallEvent) -> None:
        for notice in project(event):
            self.notices += await self._delivery.deliver_notice(notice)
        if isinstance(event, ParticipantLeft) and event.reason != "call_ended":
            # (Those still in when the call ends keep their binding until call:ended.)
            self._delivery.unbind_participant(event.call_id, event.participant_id)
        elif isinstance(event, CallEnded):
            self._delivery.unbind_call(event.call_id)
