"""The bus helper every service uses to talk to NATS, typed end to end.

- :meth:`Bus.connect` retries with back-off until a deadline, then raises ``BusUnavailable``;
  once connected it reconnects forever.
- :meth:`Bus.publish` / :meth:`Bus.subscribe` (optionally in a queue group) move typed
  messages; :meth:`Bus.request` / :meth:`Bus.serve` do typed request/reply with typed errors.
- :meth:`Bus.js_publish` writes to a JetStream stream with an ack and de-duplication id;
  :meth:`Bus.consume` runs a durable pull consumer.
- :meth:`Bus.kv` gives a typed key-value bucket with compare-and-set.

A message that does not decode never kills a subscriber: it is logged once with its
subject and reason, counted, and parked on ``dlq.<subject>`` with the error.

When tracing is on (:mod:`schemas.telemetry`), every path carries the trace context in
the message headers: publish, js_publish and request open a PRODUCER/CLIENT span and inject
``traceparent``; subscribe, consume and serve continue it in a CONSUMER/SERVER span around
the handler. When it is off, each message costs one flag check more.
"""

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, PubAck
from nats.js.client import KV_PRE_TEMPLATE, KV_STREAM_TEMPLATE, JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, Status, StatusCode

from schemas import subjects, telemetry
from schemas.codec import decoder_for, encode, type_name
from schemas.dead_letter import DeadLetter, FailureKind
from schemas.errors import (
    BadReply,
    BusUnavailable,
    NoResponders,
    RequestTimeout,
    RpcFailed,
)
from schemas.js_retry import retry_transient
from schemas.kv import TypedKv
from schemas.logs import get_logger
from schemas.metrics import counter
from schemas.rpc import RpcError, RpcErrorCode
from schemas.settings import BusSettings, redact_url

T = TypeVar("T")
R = TypeVar("R", bound=msgspec.Struct)

RPC_STATUS_HEADER = "Meeshy-Rpc-Status"
_ERROR_HEADERS = {RPC_STATUS_HEADER: "error"}
_MAX_REASON = 500

log = get_logger("schemas.bus")
_tracing = telemetry.STATE

RPC_ERRORS = counter(
    "rpc_errors_total", "Typed errors this service's responders answered, by code.", ("code",)
)


#: Where a delivered message came from: ``.subject``, ``.headers``, ``.reply``. It is the
#: nats-py message itself, so delivering it costs no extra object per message.
Incoming = Msg


Handler = Callable[[T, Incoming], Awaitable[None]]
#: Handles what one fetch brought, in stream order; raising sends each message, one by one,
#: to the consumer's :data:`Handler` (so one bad message never fails the others).
BatchHandler = Callable[[list[tuple[T, Incoming]]], Awaitable[None]]
Responder = Callable[[T, Incoming], Awaitable[msgspec.Struct]]


@dataclass(slots=True)
class BusStats:
    """Counters a service reports in its heartbeat."""

    published: int = 0
    received: int = 0
    decode_failures: int = 0
    handler_failures: int = 0
    dead_lettered: int = 0
    requests_timed_out: int = 0

    def as_gauges(self) -> dict[str, float]:
        return {
            "bus_published": float(self.published),
            "bus_received": float(self.received),
            "bus_decode_failures": float(self.decode_failures),
            "bus_handler_failures": float(self.handler_failures),
            "bus_dead_lettered": float(self.dead_lettered),
            "bus_requests_timed_out": float(self.requests_timed_out),
        }


class RpcFailure(Exception):
    """Raise from a :meth:`Bus.serve` responder to answer with a typed error."""

    def __init__(self, code: RpcErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Consumer:
    """A running durable pull consumer; :meth:`stop` finishes the message in hand."""

    name: str
    task: asyncio.Task[None]
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def continue_trace(msg: Msg, operation: str, kind: SpanKind) -> Any:
    """A span around handling ``msg``, child of the trace context its headers carry (for
    consumers outside this helper; call only when ``telemetry.STATE.active``)."""
    return telemetry.tracer().start_as_current_span(
        telemetry.span_name(msg.subject, operation),
        context=telemetry.extract(msg.headers),
        kind=kind,
        attributes=telemetry.attributes(msg.subject, operation),
    )


_continue = continue_trace


def _batch_span(subject: str, msgs: Sequence[Msg]) -> Any:
    """A span around handling a batch, linked to the trace context of each message."""
    links = []
    for msg in msgs:
        ctx = telemetry.extract(msg.headers)
        if ctx is not None:
            span_context = trace_api.get_current_span(ctx).get_span_context()
            if span_context.is_valid:
                links.append(trace_api.Link(span_context))
    attributes: dict[str, Any] = telemetry.attributes(subject, "process")
    attributes["messaging.batch.message_count"] = len(msgs)
    return telemetry.tracer().start_as_current_span(
        telemetry.span_name(subject, "process"),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    )


async def fetch_soon(psub: Any, batch: int, *, wait_s: float) -> list[Msg]:
    """Up to ``batch`` messages of a pull subscription, returning as soon as one is there.

    nats-py's ``fetch(batch, timeout)`` with nothing pending waits until ``batch`` messages
    came or the whole timeout passed: one event would wait ``timeout``. So wait for one,
    then take (without waiting) whatever else is already there.

    The second fetch's short deadline can pass before the server's answer arrives, and
    nats-py then raises a plain ``asyncio.TimeoutError`` (not its own subclass): that must
    not lose the message already in hand (it would be redelivered only after the ack wait,
    holding the consumer's acknowledgement floor back meanwhile). Messages that arrive after
    the deadline stay in the subscription's queue for the next fetch.
    """
    msgs: list[Msg] = await psub.fetch(1, timeout=wait_s)
    if batch > 1:
        with contextlib.suppress(TimeoutError):  # nats.errors.TimeoutError is a subclass
            msgs += await psub.fetch(batch - 1, timeout=0.001)
    return msgs


#: What a pull raises when its durable consumer is gone: after a whole-bus restart a memory
#: stream (``AUDIO_CHUNKS``) comes back empty and without its consumers (re-provisioned on
#: reconnect), and the server answers a pull with "no responders" (503), a lookup with
#: "consumer not found" (404). The puller then re-creates its consumer, same config.
CONSUMER_GONE: tuple[type[Exception], ...] = (
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NotFoundError,
    nats.errors.NoRespondersError,
)


async def flush_through(nc: NatsClient, timeout: float = 5.0) -> None:
    """Return once the server has processed every command this connection sent before.

    ``nc.flush()`` alone does not promise that in nats-py 2.16: it writes its PING straight
    to the socket while earlier commands (a SUB, a PUB) wait in the client's buffer for the
    flusher task, which writes them one loop turn later, after the PING. The server answers
    the PING before it has read them, so a subscription made just before could still miss a
    message published right after ``flush`` returned (the "no responders" of a request to a
    responder that had "flushed" its subscription). The flusher is woken when a command is
    queued and writes it before the first PONG can be read, so a second round trip starts
    behind everything queued before this call, and its PONG covers it.

    Only on a connected client: while nats-py is reconnecting, its ``flush`` returns at
    once with nothing sent (what is queued goes out after the reconnect). And the PONG
    vouches for the server this client is on; in a cluster, interest reaches the other
    servers shortly after.
    """
    # nats-py annotates the timeout as an int; it hands it to asyncio.wait_for (seconds).
    flush = cast("Callable[[float], Awaitable[None]]", nc.flush)
    await flush(timeout)
    await flush(timeout)


#: How long one attempt at a key-value read waits for its answer (then it is retried).
KV_READ_ATTEMPT_S = 2.0


def _inbox_prefix(settings: BusSettings) -> str:
    user = settings.effective_user()
    try:
        return subjects.inbox_prefix(user)
    except ValueError:  # a user name that is no subject token: the shared default
        return subjects.inbox_prefix(None)


class Bus:
    """A typed facade over one nats-py connection. Create with :meth:`connect`."""

    def __init__(self, nc: NatsClient, service_id: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        # A key-value read of a bucket that has no leader (electing one after a node died)
        # is not answered at all, while a write is refused at once: reads wait less than
        # nats-py's 5 s per attempt, so their retry finds the new leader soon after it is
        # elected.
        self._kv_reads = nc.jetstream(timeout=KV_READ_ATTEMPT_S)
        self.service_id = service_id
        self.stats = BusStats()
        self._logged_failures: set[tuple[str, str]] = set()
        self._consumers: list[Consumer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._mark_closing: Callable[[], None] = lambda: None
        self._reconnect_hooks: list[Callable[[], Awaitable[object]]] = []
        self._hook_tasks: set[asyncio.Task[None]] = set()

    # --- connection ---------------------------------------------------------------------
    @classmethod
    async def connect(cls, settings: BusSettings, service_id: str) -> "Bus":
        """Connect, retrying with exponential back-off until ``nats_connect_deadline_s``."""
        servers = settings.servers()
        shown = ", ".join(redact_url(s) for s in servers)
        deadline = time.monotonic() + settings.nats_connect_deadline_s
        delay = 0.2
        attempt = 0

        closing = False
        connected = False

        async def on_error(exc: Exception) -> None:
            if connected:  # failed first attempts are reported by the retry loop below
                log.warning("bus.error", error=type(exc).__name__, detail=str(exc)[:_MAX_REASON])

        async def on_disconnected() -> None:
            if not closing:
                log.warning("bus.disconnected", servers=shown)

        made: list[Bus] = []

        async def on_reconnected() -> None:
            log.info("bus.reconnected", servers=shown)
            if made:
                made[0]._after_reconnect()

        while True:
            attempt += 1
            left = deadline - time.monotonic()
            try:
                # One pass over the servers per attempt (nats-py would otherwise retry
                # forever inside connect); reconnecting forever is switched on below.
                nc = await asyncio.wait_for(
                    nats.connect(
                        servers=servers,
                        name=service_id,
                        user=settings.nats_user,
                        password=settings.nats_password,
                        token=settings.nats_token,
                        # Each NATS user has its own reply subjects (schemas/permissions.py).
                        inbox_prefix=_inbox_prefix(settings),
                        connect_timeout=2,
                        allow_reconnect=True,
                        max_reconnect_attempts=1,
                        reconnect_time_wait=0.2,
                        error_cb=on_error,
                        disconnected_cb=on_disconnected,
                        reconnected_cb=on_reconnected,
                    ),
                    timeout=max(left, 0.5) + 2.5,
                )
            except Exception as exc:  # nats-py raises several unrelated types here
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BusUnavailable(
                        f"no NATS server answered at {shown} within "
                        f"{settings.nats_connect_deadline_s:g}s ({attempt} attempts, "
                        f"last error: {type(exc).__name__})"
                    ) from None
                wait = min(delay, left)
                log.warning(
                    "bus.connect_retry",
                    servers=shown,
                    attempt=attempt,
                    retry_in_s=round(wait, 2),
                    error=type(exc).__name__,
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, 5.0) * (0.8 + 0.4 * random.random())
                continue
            connected = True
            nc.options["max_reconnect_attempts"] = -1
            nc.options["reconnect_time_wait"] = 1
            log.info("bus.connected", servers=shown, attempts=attempt)
            bus = cls(nc, service_id)

            def mark_closing() -> None:
                nonlocal closing
                closing = True

            bus._mark_closing = mark_closing
            made.append(bus)
            return bus

    def on_reconnect(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Run ``hook`` after every reconnect (in a task, not inside nats-py's reconnect
        loop): what a server restart loses, such as a memory stream, is made again."""
        self._reconnect_hooks.append(hook)

    def _after_reconnect(self) -> None:
        for hook in self._reconnect_hooks:

            async def run(hook: Callable[[], Awaitable[object]] = hook) -> None:
                try:
                    await hook()
                except Exception as exc:
                    log.warning(
                        "bus.reconnect_hook_failed",
                        error=type(exc).__name__,
                        detail=str(exc)[:_MAX_REASON],
                    )

            task = asyncio.get_running_loop().create_task(run())
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def flush(self, timeout: float = 5.0) -> None:
        """Return once the server has processed everything sent before (see
        :func:`flush_through`): after it, a subscription made before is live on that
        server (on a connected client)."""
        await flush_through(self.nc, timeout)

    async def drain(self) -> None:
        """Stop consumers, let subscriptions finish what they hold, flush, close."""
        self._mark_closing()
        for consumer in self._consumers:
            await consumer.stop()
        if self._tasks:  # concurrent responders still answering need the connection open
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self.nc.is_closed:
            with contextlib.suppress(nats.errors.ConnectionClosedError):
                await self.nc.drain()

    async def close(self) -> None:
        self._mark_closing()
        for consumer in self._consumers:
            consumer.task.cancel()
        if not self.nc.is_closed:
            await self.nc.close()

    # --- core publish / subscribe -----------------------------------------------------
    def publish(
        self,
        subject: str,
        message: msgspec.Struct,
        headers: dict[str, str] | None = None,
        *,
        trace: bool = True,
    ) -> Awaitable[None]:
        """Publish one typed message (fire and forget); await the result.

        Not a coroutine itself: it hands back nats-py's own, saving a frame per message on
        the hottest path (see bench/bus.py). ``trace=False`` keeps a periodic message
        (heartbeats) out of the traces.
        """
        self.stats.published += 1
        if _tracing.active and trace:
            return self._publish_traced(subject, encode(message), headers)
        return self.nc.publish(subject, encode(message), headers=headers)

    async def _publish_traced(
        self, subject: str, data: bytes, headers: dict[str, str] | None
    ) -> None:
        with telemetry.tracer().start_as_current_span(
            telemetry.span_name(subject, "publish"),
            kind=SpanKind.PRODUCER,
            attributes=telemetry.attributes(subject, "publish"),
        ):
            await self.nc.publish(subject, data, headers=telemetry.inject(headers))

    async def subscribe(
        self,
        subject: str,
        type_: type[T] | Any,
        handler: Handler[T],
        *,
        queue: str = "",
    ) -> Subscription:
        """Deliver each message on ``subject`` decoded as ``type_`` to ``handler``.

        With ``queue``, instances in the same group share the messages (one each).
        Decode failures go to the dead-letter subject; handler exceptions are logged and
        counted; neither stops the subscription. Whether its messages are traced is decided
        here, from the tracing set up at the time.
        """
        decoder = decoder_for(type_)
        expected = type_name(type_)
        stats = self.stats

        async def on_message(msg: Msg) -> None:
            stats.received += 1
            try:
                value = decoder.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self._reject(msg.subject, msg.data, expected, "decode", str(exc))
                return
            try:
                await handler(value, msg)
            except Exception as exc:
                stats.handler_failures += 1
                log.exception("bus.handler_failed", subject=msg.subject, error=type(exc).__name__)

        async def on_message_traced(msg: Msg) -> None:
            with _continue(msg, "process", SpanKind.CONSUMER):
                await on_message(msg)

        # Chosen once, so an untraced subscription pays nothing per message (services set
        # tracing up before they subscribe).
        callback = on_message_traced if _tracing.active else on_message
        return await self.nc.subscribe(subject, queue=queue, cb=callback)

    async def _reject(
        self,
        subject: str,
        payload: bytes,
        expected: str,
        failure: FailureKind,
        reason: str,
        *,
        attempts: int = 1,
    ) -> None:
        """Count, log once per (subject, reason), and park the message as a dead letter."""
        if failure == "decode":
            self.stats.decode_failures += 1
        reason = reason[:_MAX_REASON]
        key = (subject, reason)
        if key not in self._logged_failures:
            if len(self._logged_failures) > 10_000:
                self._logged_failures.clear()
            self._logged_failures.add(key)
            log.warning(
                "bus.message_rejected",
                subject=subject,
                failure=failure,
                reason=reason,
                expected_type=expected,
            )
        letter = DeadLetter(
            original_subject=subject,
            failure=failure,
            reason=reason,
            payload=bytes(payload),
            service_id=self.service_id,
            expected_type=expected,
            delivery_attempts=attempts,
        )
        data = encode(letter)
        dlq = subjects.dead_letter(subject)
        try:
            # Acknowledged by the DEAD_LETTERS stream, so a parked message is really kept.
            await self.js.publish(dlq, data, timeout=2.0)
            self.stats.dead_lettered += 1
        except Exception as exc:  # never let parking a letter kill the subscriber
            log.error("bus.dead_letter_unacked", subject=subject, error=type(exc).__name__)
            # No stream (a bus that never provisioned) or JetStream away: still tell
            # whoever listens on the dead-letter subject.
            with contextlib.suppress(Exception):
                await self.nc.publish(dlq, data)

    async def dead_letter(
        self, subject: str, payload: bytes, expected: str, reason: str, *, attempts: int = 1
    ) -> None:
        """Park a message this service could not decode (for consumers outside the helpers)."""
        await self._reject(subject, payload, expected, "decode", reason, attempts=attempts)

    # --- request / reply ------------------------------------------------------------
    async def request(
        self,
        subject: str,
        message: msgspec.Struct,
        reply_type: type[T] | Any,
        *,
        timeout: float = 2.0,
    ) -> T:
        """Send a typed request and decode the typed reply.

        Raises ``RequestTimeout``, ``NoResponders``, ``RpcFailed`` (typed error reply) or
        ``BadReply``.
        """
        try:
            if _tracing.active:
                msg = await self._request_traced(subject, encode(message), timeout)
            else:
                msg = await self.nc.request(subject, encode(message), timeout=timeout)
        except nats.errors.NoRespondersError:
            raise NoResponders(subject) from None
        except nats.errors.TimeoutError:
            self.stats.requests_timed_out += 1
            raise RequestTimeout(subject, timeout) from None
        if msg.headers and msg.headers.get(RPC_STATUS_HEADER) == "error":
            try:
                err: RpcError = decoder_for(RpcError).decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise BadReply(f"{subject}: undecodable error reply: {exc}") from None
            raise RpcFailed(subject, err.code, err.message)
        try:
            return cast("T", decoder_for(reply_type).decode(msg.data))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadReply(f"{subject}: reply is not {type_name(reply_type)}: {exc}") from None

    async def _request_traced(self, subject: str, data: bytes, timeout: float) -> Msg:
        with telemetry.tracer().start_as_current_span(
            telemetry.span_name(subject, "request"),
            kind=SpanKind.CLIENT,
            attributes=telemetry.attributes(subject, "send"),
        ) as span:
            reply = await self.nc.request(
                subject, data, timeout=timeout, headers=telemetry.inject(None)
            )
            if reply.headers and reply.headers.get(RPC_STATUS_HEADER) == "error":
                span.set_status(Status(StatusCode.ERROR, "rpc error reply"))
            return reply

    async def serve(
        self,
        subject: str,
        request_type: type[T] | Any,
        responder: Responder[T],
        *,
        queue: str = "",
        concurrency: int = 1,
    ) -> Subscription:
        """Answer requests on ``subject``; the responder returns the reply Struct.

        Undecodable requests get ``RpcError(code="bad_request")`` (and a dead letter); a
        responder raising :class:`RpcFailure` gets that code; any other exception gets
        ``internal`` with no detail (the traceback goes to the log only).

        nats-py hands a subscription's messages to its callback one at a time, so one slow
        request (an SDP negotiation) would hold up every other. With ``concurrency`` > 1 up
        to that many requests are answered at once; beyond it the subscription waits
        (back-pressure, nothing dropped). :meth:`drain` waits for those in hand.
        """
        decoder = decoder_for(request_type)
        expected = type_name(request_type)
        stats = self.stats

        async def answer(msg: Msg) -> None:
            if _tracing.active:
                with _continue(msg, "process", SpanKind.SERVER):
                    await answer_plain(msg)
            else:
                await answer_plain(msg)

        async def answer_plain(msg: Msg) -> None:
            stats.received += 1
            try:
                value = decoder.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self._reject(msg.subject, msg.data, expected, "decode", str(exc))
                await self._answer_error(msg, "bad_request", f"not a valid {expected}: {exc}")
                return
            try:
                reply = await responder(value, msg)
            except RpcFailure as failure:
                await self._answer_error(msg, failure.code, failure.message)
                return
            except Exception as exc:
                stats.handler_failures += 1
                log.exception("bus.responder_failed", subject=msg.subject, error=type(exc).__name__)
                await self._answer_error(msg, "internal", "internal error")
                return
            if msg.reply:
                await self.nc.publish(msg.reply, encode(reply))
                stats.published += 1

        if concurrency <= 1:
            return await self.nc.subscribe(subject, queue=queue, cb=answer)

        slots = asyncio.Semaphore(concurrency)

        async def answer_then_release(msg: Msg) -> None:
            try:
                await answer(msg)
            finally:
                slots.release()

        async def on_request(msg: Msg) -> None:
            await slots.acquire()
            task = asyncio.create_task(answer_then_release(msg), name=f"rpc:{subject}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return await self.nc.subscribe(subject, queue=queue, cb=on_request)

    async def _answer_error(self, msg: Msg, code: RpcErrorCode, message: str) -> None:
        RPC_ERRORS.labels(code=code).inc()
        if _tracing.active:
            span = trace_api.get_current_span()
            span.set_status(Status(StatusCode.ERROR, code))
        if not msg.reply:
            return
        error = RpcError(code=code, message=message[:_MAX_REASON])
        await self.nc.publish(msg.reply, encode(error), headers=_ERROR_HEADERS)

    # --- JetStream ----------------------------------------------------------------------
    async def js_publish(
        self, subject: str, message: msgspec.Struct, *, msg_id: str | None = None
    ) -> int:
        """Publish into a stream and wait for its ack; returns the stream sequence.

        ``msg_id`` (the event id) makes a retried publish a no-op within the stream's
        de-duplication window, so a timed-out publish is retried only when it has one;
        "no responders" (a leader election under way) is always retried, for up to 15 s.
        """
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        data = encode(message)
        if _tracing.active:
            with telemetry.tracer().start_as_current_span(
                telemetry.span_name(subject, "publish"),
                kind=SpanKind.PRODUCER,
                attributes=telemetry.attributes(subject, "publish"),
            ):
                traced = telemetry.inject(headers)
                ack = await retry_transient(
                    lambda: self.js.publish(subject, data, headers=traced),
                    what=subject,
                    idempotent=msg_id is not None,
                )
        else:
            ack = await retry_transient(
                lambda: self.js.publish(subject, data, headers=headers),
                what=subject,
                idempotent=msg_id is not None,
            )
        self.stats.published += 1
        return int(ack.seq)

    async def publish_encoded(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Publish bytes that are already an encoded message (an outbox entry), traced like
        :meth:`publish`."""
        self.stats.published += 1
        if _tracing.active:
            await self._publish_traced(subject, data, headers)
        else:
            await self.nc.publish(subject, data, headers=headers)

    async def js_publish_encoded(self, subject: str, data: bytes, *, msg_id: str) -> PubAck:
        """:meth:`js_publish` for bytes already encoded; returns the ack (``.duplicate``
        says the stream already had ``msg_id``)."""
        headers = {"Nats-Msg-Id": msg_id}
        if _tracing.active:
            with telemetry.tracer().start_as_current_span(
                telemetry.span_name(subject, "publish"),
                kind=SpanKind.PRODUCER,
                attributes=telemetry.attributes(subject, "publish"),
            ):
                traced = telemetry.inject(headers)
                ack = await retry_transient(
                    lambda: self.js.publish(subject, data, headers=traced),
                    what=subject,
                    idempotent=True,
                )
        else:
            ack = await retry_transient(
                lambda: self.js.publish(subject, data, headers=headers),
                what=subject,
                idempotent=True,
            )
        self.stats.published += 1
        return ack

    async def consume(
        self,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        type_: type[T] | Any,
        handler: Handler[T],
        max_deliver: int = 5,
        ack_wait_s: float = 30.0,
        batch: int = 32,
        fallback: type[Any] | None = None,
        batch_handler: BatchHandler[T] | None = None,
    ) -> Consumer:
        """Run a durable pull consumer; instances sharing ``durable`` share the work.

        A message is acked after its handler returns. A handler exception naks it with a
        back-off; after ``max_deliver`` attempts it goes to the dead-letter subject. An
        undecodable message goes there at once, unless it decodes as ``fallback`` (an
        envelope of the fields every version of the message has): then the handler gets
        the envelope instead, so a consumer older than its producers keeps its place.

        With ``batch_handler``, what one fetch brings (up to ``batch``) goes to it at once,
        and every message is acked when it returns. If it raises, each message is handled
        again on its own by ``handler``, with the rules above: a message it cannot handle
        fails alone, never the batch it came in. Its span links to every message's trace.
        """
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=filter_subject,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
        )
        psub: Any = await self.js.pull_subscribe(
            filter_subject, durable=durable, stream=stream, config=config
        )
        decoder = decoder_for(type_)
        fallback_decoder: msgspec.json.Decoder[Any] | None = (
            decoder_for(fallback) if fallback is not None else None
        )
        expected = type_name(type_)
        stopping = asyncio.Event()

        def decode(data: bytes) -> Any:
            try:
                return decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                if fallback_decoder is None:
                    raise
                try:
                    return fallback_decoder.decode(data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    pass
                raise  # the first error says best what is wrong

        async def handle(msg: Msg) -> None:
            self.stats.received += 1
            attempts = msg.metadata.num_delivered
            try:
                value = decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self._reject(
                    msg.subject, msg.data, expected, "decode", str(exc), attempts=attempts
                )
                await msg.term()
                return
            try:
                await handler(value, msg)
            except Exception as exc:
                self.stats.handler_failures += 1
                log.exception(
                    "bus.consumer_handler_failed",
                    subject=msg.subject,
                    durable=durable,
                    attempt=attempts,
                    error=type(exc).__name__,
                )
                if attempts >= max_deliver:
                    await self._reject(
                        msg.subject,
                        msg.data,
                        expected,
                        "handler",
                        type(exc).__name__,
                        attempts=attempts,
                    )
                    await msg.term()
                else:
                    await msg.nak(delay=min(0.2 * 2**attempts, 10.0))
                return
            await msg.ack()

        async def handle_batch(msgs: list[Msg], batch_handler: BatchHandler[T]) -> None:
            items: list[tuple[T, Incoming]] = []
            for msg in msgs:
                try:
                    items.append((decode(msg.data), msg))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    await handle(msg)  # rejected on its own, with its reason
            if not items:
                return
            try:
                if _tracing.active:
                    with _batch_span(filter_subject, [m for _, m in items]):
                        await batch_handler(items)
                else:
                    await batch_handler(items)
            except Exception as exc:
                # Not yet a failure of any message: each is tried again on its own.
                log.warning(
                    "bus.consumer_batch_failed",
                    durable=durable,
                    messages=len(items),
                    error=type(exc).__name__,
                )
                if stopping.is_set():
                    # Draining: hand them back at once (whoever runs next takes them)
                    # rather than fail each again, one timeout after another.
                    for _, msg in items:
                        with contextlib.suppress(Exception):
                            await msg.nak()
                    return
                for _, msg in items:
                    if _tracing.active:
                        with _continue(msg, "process", SpanKind.CONSUMER):
                            await handle(msg)
                    else:
                        await handle(msg)
                return
            self.stats.received += len(items)
            for _, msg in items:
                await msg.ack()

        async def loop() -> None:
            nonlocal psub
            gone = False
            while not stopping.is_set():
                if gone:
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()
                    try:
                        psub = await self.js.pull_subscribe(
                            filter_subject, durable=durable, stream=stream, config=config
                        )
                    except Exception as exc:
                        log.warning(
                            "bus.consumer_recreate_failed", durable=durable,
                            error=type(exc).__name__,
                        )  # fmt: skip
                        await asyncio.sleep(0.5)
                        continue
                    gone = False
                    log.info("bus.consumer_recreated", durable=durable, stream=stream)
                try:
                    msgs = await fetch_soon(psub, batch, wait_s=0.5)
                except nats.errors.TimeoutError:
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                    return
                except CONSUMER_GONE as exc:
                    log.warning("bus.consumer_gone", durable=durable, error=type(exc).__name__)
                    gone = True
                    continue
                except Exception as exc:
                    log.warning("bus.fetch_failed", durable=durable, error=type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                if batch_handler is not None and len(msgs) > 1:
                    await handle_batch(msgs, batch_handler)
                    continue
                for msg in msgs:
                    if _tracing.active:
                        with _continue(msg, "process", SpanKind.CONSUMER):
                            await handle(msg)
                    else:
                        await handle(msg)
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

        consumer = Consumer(
            durable, asyncio.create_task(loop(), name=f"consumer:{durable}"), stopping
        )
        self._consumers.append(consumer)
        return consumer

    # --- key-value ----------------------------------------------------------------------
    async def kv(self, bucket: str, type_: type[T] | Any) -> "TypedKv[T]":
        """A typed handle on an existing bucket (see :mod:`schemas.provisioning`)."""
        kv = await self.js.key_value(bucket)
        # The same bucket through the short-timeout context (no second lookup: a bucket's
        # stream and subject prefix are fixed by its name).
        reads = KeyValue(
            name=bucket,
            stream=KV_STREAM_TEMPLATE.format(bucket=bucket),
            pre=KV_PRE_TEMPLATE.format(bucket=bucket),
            js=self._kv_reads,
            direct=kv._direct,  # nats-py keeps it only there
        )
        return TypedKv(kv, bucket, type_, reads=reads)
