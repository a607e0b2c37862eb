"""The Socket.IO server of one gateway: authentication, dispatch, refusals, disconnects.

Handlers live in small modules (:mod:`.lifecycle`, :mod:`.relay`, ...) and are registered
here by event name; this module knows nothing of what they do. Each socket's events are
handled one at a time in the order the client sent them (an offer before its candidates,
mute before unmute); different sockets run in parallel.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from opentelemetry.trace import SpanKind

from gateway.calls import CallService
from gateway.delivery import Delivery, SocketSession
from gateway.errors import CallError
from gateway.rate_limit import RateLimiter
from gateway.settings import GatewaySettings
from gateway.sockets.requests import Ack, Handler, Handlers
from gateway.tokens import Principal, TokenService
from schemas import metrics, telemetry
from schemas.logs import get_logger

log = get_logger("gateway.sockets")

#: Socket events that start no trace (a heartbeat every few seconds per socket is noise).
_UNTRACED = frozenset({"call:heartbeat"})


class _ClientFaultFilter(logging.Filter):
    """Socket.IO/Engine.IO log a client's malformed packet as an error with a traceback;
    it is the client's fault, so keep one warning line with the exception type only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = type(record.exc_info[1]).__name__
            record.exc_info = None
            record.exc_text = None
            record.fields = {"error": error}
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _library_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _ClientFaultFilter) for f in logger.filters):
        logger.addFilter(_ClientFaultFilter())
    return logger


SOCKET_ERRORS = metrics.counter(
    "gateway_socket_errors_total", "call:error refusals sent to sockets, by error code.", ("code",)
)


class GuardedServer(socketio.AsyncServer):  # type: ignore[misc]
    """An AsyncServer that refuses malformed Socket.IO packets with a warning, not a crash
    of the message handler (the socket stays open; the packet is dropped)."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            log.warning("socket.malformed_packet", error=type(exc).__name__)


class SocketServer:
    """Authenticated sockets and the dispatch of their events to registered handlers."""

    def __init__(
        self,
        settings: GatewaySettings,
        tokens: TokenService,
        calls: CallService,
        limiter: RateLimiter,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.calls = calls
        self.limiter = limiter
        self.sio = GuardedServer(
            async_mode="asgi",
            cors_allowed_origins=settings.origins(),
            logger=_library_logger("gateway.socketio"),
            engineio_logger=_library_logger("gateway.engineio"),
            max_http_buffer_size=max(256 * 1024, settings.max_sdp_bytes * 4),
        )
        self.delivery: Delivery | None = None
        self.principals: dict[str, Principal] = {}
        self._handlers: dict[str, Handler] = {}
        self._unordered: set[str] = set()
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("*", self._on_unknown)

    def attach(self, delivery: Delivery) -> None:
        self.delivery = delivery

    def register(self, handlers: Handlers, *, ordered: bool = True) -> None:
        """Serve these events (each name once).

        ``ordered=False``: a socket's events of these names do not wait for its other
        events in hand, nor make them wait (independent requests, such as the SDP of an
        SFU uplink and downlink, negotiated at the same time).
        """
        for name, handler in handlers.items():
            if name in self._handlers:
                raise ValueError(f"{name} is handled twice")
            self._handlers[name] = handler
            if not ordered:
                self._unordered.add(name)
            self.sio.on(name, self._bound(name))

    async def emit(self, event: str, payload: dict[str, Any], sid: str) -> None:
        await self.sio.emit(event, payload, to=sid)

    # --- connection ----------------------------------------------------------------------
    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            principal = self.tokens.verify(token)
            if self.delivery is None:
                raise CallError("unavailable", "the gateway is starting")
        except CallError as err:
            raise socketio.exceptions.ConnectionRefusedError(err.as_dict()) from None
        self.principals[sid] = principal
        try:
            await self.delivery.attach(SocketSession(sid=sid, principal_id=principal.principal_id))
        except Exception as exc:  # NATS unavailable: refuse this socket, keep the gateway up
            self.principals.pop(sid, None)
            log.warning("socket.attach_failed", error=type(exc).__name__)
            refusal = CallError("unavailable", "the gateway cannot deliver events right now")
            raise socketio.exceptions.ConnectionRefusedError(refusal.as_dict()) from None
        log.debug("socket.connected", sid=sid, kind=principal.kind)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.principals.pop(sid, None)
        if self.delivery is None:
            return
        # Read the binding before detaching (detaching unbinds it).
        live = self.delivery.sessions.get(sid)
        call_id = live.call_id if live else None
        participant_id = live.participant_id if live else None
        session = await self.delivery.detach(sid)
        if session is None:
            return
        async with session.lock:  # an event in hand (an accept binding this socket) ends first
            pass
        call_id = session.call_id or call_id
        participant_id = session.participant_id or participant_id
        if call_id is None or participant_id is None:
            return
        if self.delivery.session_of(call_id, participant_id) is not None:
            return  # another local socket holds this participant
        try:
            await self.calls.disconnect(call_id, participant_id, session.resume_hash)
        except Exception as exc:
            log.warning(
                "socket.disconnect_failed",
                call_id=call_id,
                participant_id=participant_id,
                error=type(exc).__name__,
            )

    # --- dispatch ------------------------------------------------------------------------
    def _bound(self, name: str) -> Callable[..., Awaitable[Ack]]:
        async def handler(sid: str, *args: Any) -> Ack:
            # One argument is the payload; none or several cannot be a valid request.
            data = args[0] if len(args) == 1 else list(args)
            return await self.dispatch(name, sid, data)

        return handler

    async def dispatch(self, name: str, sid: str, data: Any) -> Ack:
        principal = self.principals.get(sid)
        session = self.delivery.sessions.get(sid) if self.delivery else None
        try:
            if principal is None or session is None:
                raise CallError("unauthorized", "the socket is not authenticated")
            self.limiter.check(principal.principal_id, name)
            if not telemetry.STATE.active or name in _UNTRACED:
                return await self._handle(name, session, principal, data)
            # A trace starts at the browser's event: what it causes downstream joins it.
            with telemetry.tracer().start_as_current_span(
                f"socket {name}", kind=SpanKind.SERVER, attributes={"socketio.event": name}
            ):
                return await self._handle(name, session, principal, data)
        except CallError as err:
            return await self._refuse(sid, name, err, session)
        except Exception as exc:
            log.exception(
                "signaling.handler_failed",
                event_name=name,
                call_id=session.call_id if session else None,
                error=type(exc).__name__,
            )
            return await self._refuse(sid, name, CallError("internal", "internal error"), session)

    async def _handle(
        self, name: str, session: SocketSession, principal: Principal, data: Any
    ) -> Ack:
        if name in self._unordered:
            return await self._handlers[name](session, principal, data)
        async with session.lock:  # one event of a socket at a time, in arrival order
            return await self._handlers[name](session, principal, data)

    async def _refuse(
        self, sid: str, name: str, err: CallError, session: SocketSession | None
    ) -> Ack:
        body = {**err.as_dict(), "event": name}
        SOCKET_ERRORS.labels(code=err.code).inc()
        try:
            await self.sio.emit("call:error", body, to=sid)
        except Exception as exc:
            log.debug("signaling.error_emit_failed", error=type(exc).__name__)
        if err.code not in ("rate_limited",):
            log.info(
                "signaling.refused",
                event_name=name,
                code=err.code,
                call_id=session.call_id if session else None,
                participant_id=session.participant_id if session else None,
            )
        return {"ok": False, "error": err.as_dict()}

    async def _on_unknown(self, event: str, sid: str, *args: Any) -> Ack:
        err = CallError("unknown_event", "unknown event name")
        principal = self.principals.get(sid)
        if principal is not None:
            try:
                self.limiter.check(principal.principal_id, "unknown")
            except CallError as limited:
                err = limited
        return await self._refuse(sid, "unknown", err, None)
