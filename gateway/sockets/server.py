"""The Socket.IO server of one gateway: authentication, dispatch, refusals, disconnects.

Handlers live in small modules (:mod:`.lifecycle`, :mod:`.relay`, ...) and are registered
here by event name; this module knows nothing of what they do. Each socket's events are
handled one at a time in the order the client sent them (an offer before its candidates,
mute before unmute); different sockets run in parallel.

What every event passes first, whatever its handler: a name that is not one of Socket.IO's
own lifecycle events (a client sending ``connect`` or ``disconnect`` would otherwise run
the server's own handlers), a live token (an expired one is refused and the socket
disconnected with the reason; ``call:refresh-token`` renews it), the rate limit, and text
that can be encoded (no unpaired surrogate anywhere in the payload). Connecting passes a
rate limit per client address (before the token is read) and per person, and a cap on the
sockets one person holds.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from opentelemetry.trace import SpanKind

from gateway.calls import CallService
from gateway.client_address import ClientAddress
from gateway.cors import OriginPolicy
from gateway.delivery import Delivery, SocketSession
from gateway.errors import CallError
from gateway.rate_limit import RateLimiter
from gateway.settings import GatewaySettings
from gateway.sockets.requests import Ack, Handler, Handlers, RefreshToken, decode, ok
from gateway.tokens import Principal, TokenService
from gateway.validation import check_text
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


#: Names a client may never send as events: Socket.IO's own lifecycle (python-socketio
#: would run the server's connect/disconnect handlers with the client's arguments), the
#: reserved names of the protocol and of its client libraries, and the catch-all.
RESERVED_EVENTS = frozenset(
    {
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "error",
        "message",
        "newListener",
        "removeListener",
        "ping",
        "pong",
        "*",
    }
)
REFRESH_EVENT = "call:refresh-token"


def _refused(err: CallError) -> socketio.exceptions.ConnectionRefusedError:
    """A refused connect: the reason as ``connect_error``'s data (``{code, message}``), which
    socket.io clients expose as ``err.data``; a single argument would arrive as the text of
    a Python dict."""
    return socketio.exceptions.ConnectionRefusedError(err.message, err.as_dict())


class GuardedServer(socketio.AsyncServer):  # type: ignore[misc]
    """An AsyncServer that refuses malformed Socket.IO packets with a warning, not a crash
    of the message handler (the socket stays open; the packet is dropped), and events
    whose name is not a client event name (reserved, empty, not a string)."""

    #: ``refuse(sid, name)`` -> the ack body; set by :class:`SocketServer`.
    refuse_name: Callable[[str, str], Awaitable[Ack]] | None = None

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            log.warning("socket.malformed_packet", error=type(exc).__name__)

    async def _handle_event(self, eio_sid: str, namespace: Any, id: Any, data: Any) -> None:
        name = data[0] if isinstance(data, list) and data else None
        if isinstance(name, str) and name and name not in RESERVED_EVENTS:
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or self.refuse_name is None:
            return
        body = await self.refuse_name(sid, name if isinstance(name, str) else "")
        if id is not None:
            await self._send_packet(
                eio_sid,
                self.packet_class(socketio.packet.ACK, namespace=namespace, id=id, data=[body]),
            )


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
        self.origins = OriginPolicy(settings)
        self.addresses = ClientAddress(settings.proxy_networks())
        self.sio = GuardedServer(
            async_mode="asgi",
            cors_allowed_origins=self.origins.allows,
            logger=_library_logger("gateway.socketio"),
            engineio_logger=_library_logger("gateway.engineio"),
            max_http_buffer_size=max(256 * 1024, settings.max_sdp_bytes * 4),
        )
        self.delivery: Delivery | None = None
        self.principals: dict[str, Principal] = {}
        #: Sockets per person on this gateway (connected or being attached).
        self._per_principal: Counter[str] = Counter()
        self._handlers: dict[str, Handler] = {}
        self._unordered: set[str] = set()
        self._closing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.expired_disconnects = 0
        self.sio.refuse_name = self._refuse_name
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("*", self._on_unknown)
        self.register({REFRESH_EVENT: self._refresh_token})

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
        client = self.addresses.bucket(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR")
        )
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            # Before the token is read, so guessing tokens is as slow as connecting.
            self.limiter.check(f"addr:{client}", "socket:connect")
            principal = self.tokens.verify(token)
            self.limiter.check(principal.principal_id, "socket:connect")
            if (
                self._per_principal[principal.principal_id]
                >= self.settings.max_sockets_per_principal
            ):
                raise CallError(
                    "rate_limited",
                    f"too many open sockets (at most {self.settings.max_sockets_per_principal})",
                )
            if self.delivery is None:
                raise CallError("unavailable", "the gateway is starting")
        except CallError as err:
            SOCKET_ERRORS.labels(code=err.code).inc()
            raise _refused(err) from None
        self.principals[sid] = principal
        self._per_principal[principal.principal_id] += 1
        try:
            await self.delivery.attach(SocketSession(sid=sid, principal_id=principal.principal_id))
        except Exception as exc:  # NATS unavailable: refuse this socket, keep the gateway up
            self._forget(sid)
            log.warning("socket.attach_failed", error=type(exc).__name__)
            refusal = CallError("unavailable", "the gateway cannot deliver events right now")
            raise _refused(refusal) from None
        log.debug("socket.connected", sid=sid, kind=principal.kind)

    def _forget(self, sid: str) -> None:
        principal = self.principals.pop(sid, None)
        self._closing.discard(sid)
        if principal is not None:
            self._per_principal[principal.principal_id] -= 1
            if self._per_principal[principal.principal_id] <= 0:
                del self._per_principal[principal.principal_id]

    async def end_session(self, sid: str, err: CallError) -> None:
        """Tell a socket why it is being closed (``call:error`` with ``event: "auth"``),
        then disconnect it; its participant keeps the reconnect grace period."""
        if sid in self._closing or sid not in self.principals:
            return
        self._closing.add(sid)
        SOCKET_ERRORS.labels(code=err.code).inc()
        log.info("socket.session_ended", sid=sid, code=err.code)
        try:
            await self.sio.emit("call:error", {**err.as_dict(), "event": "auth"}, to=sid)
            await self.sio.disconnect(sid)
        except Exception as exc:  # already gone
            log.debug("socket.end_failed", error=type(exc).__name__)

    def _end_soon(self, sid: str, err: CallError) -> None:
        """End a session after the refusal in hand has been acknowledged."""
        task = asyncio.get_running_loop().create_task(self.end_session(sid, err))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_token(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        """``call:refresh-token {token}``: the same person's fresh token keeps the socket."""
        req = decode(data, RefreshToken)
        fresh = self.tokens.verify(req.token)
        same = (
            fresh.principal_id == who.principal_id
            and fresh.kind == who.kind
            and fresh.conversation_id == who.conversation_id
        )
        if not same:
            raise CallError("forbidden", "the new token is for someone else")
        if session.sid in self.principals:
            self.principals[session.sid] = fresh
        return ok(expiresAt=fresh.expires_at)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self._forget(sid)
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
            if principal is None or session is None or sid in self._closing:
                raise CallError("unauthorized", "the socket is not authenticated")
            if principal.expired(time.time()) and name != REFRESH_EVENT:
                self._end_soon(sid, CallError("unauthorized", "the token has expired"))
                raise CallError(
                    "unauthorized",
                    "the token has expired; reconnect with a fresh one (or send "
                    "call:refresh-token before it expires)",
                )
            self.limiter.check(principal.principal_id, name)
            check_text(data)
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

    async def _refuse_name(self, sid: str, name: str) -> Ack:
        err = CallError("bad_request", "this event name is reserved by Socket.IO")
        principal = self.principals.get(sid)
        if principal is not None:
            try:
                self.limiter.check(principal.principal_id, "unknown")
            except CallError as limited:
                err = limited
        return await self._refuse(sid, "reserved", err, None)

    def expired_sessions(self, now: float) -> list[str]:
        """Sockets whose token has expired (and that are not being closed already)."""
        return [
            sid for sid, p in self.principals.items() if p.expired(now) and sid not in self._closing
        ]

    async def _on_unknown(self, event: str, sid: str, *args: Any) -> Ack:
        err = CallError("unknown_event", "unknown event name")
        principal = self.principals.get(sid)
        if principal is not None:
            try:
                self.limiter.check(principal.principal_id, "unknown")
            except CallError as limited:
                err = limited
        return await self._refuse(sid, "unknown", err, None)
