"""Socket.IO signaling: authenticated sockets, call events with acknowledgements, P2P relay.

Every client event is answered with an acknowledgement ``{"ok": true, ...}`` or
``{"ok": false, "error": {"code", "message"}}``; a refusal is also emitted as
``call:error {code, message, event}``. Payloads are decoded into typed requests (strict
types, unknown fields ignored); nothing a client sends can raise past a handler.

Signals (offer, answer, ice-candidate, ice-restart) go to one participant of the same call,
stamped with the sender's participant id by the gateway, through
``user.<principal_id>.signal`` to whichever gateway holds that participant's socket.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
import socketio

from gateway import state_machine as sm
from gateway.calls import CallService, Joined
from gateway.delivery import Delivery, SocketSession
from gateway.errors import CallError
from gateway.ice import ice_servers
from gateway.rate_limit import RateLimiter
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, TokenService
from gateway.validation import ClientId, check_candidate, check_sdp
from schemas.call_events import MediaKind
from schemas.call_state import CallParticipantState
from schemas.logs import get_logger

log = get_logger("gateway.signaling")

SignalType = Literal["offer", "answer", "ice-candidate", "ice-restart"]


# --- typed client requests (camelCase on the wire) ------------------------------------------
class _Req(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class InitiateRequest(_Req, frozen=True, kw_only=True):
    conversation_id: ClientId
    media: MediaKind = "video"


class CallRef(_Req, frozen=True, kw_only=True):
    call_id: ClientId


class JoinRequest(_Req, frozen=True, kw_only=True):
    call_id: ClientId
    resume_token: str | None = None


class LeaveRequest(_Req, frozen=True, kw_only=True):
    call_id: ClientId
    participant_id: ClientId | None = None


class SignalRequest(_Req, frozen=True, kw_only=True):
    call_id: ClientId
    to: ClientId
    type: SignalType
    sdp: str | None = None
    candidate: dict[str, Any] | None = None
    #: Clients need not send it; if they do it must be their own participant id.
    from_: str | None = msgspec.field(default=None, name="from")


class ToggleRequest(_Req, frozen=True, kw_only=True):
    call_id: ClientId
    enabled: bool


class IceRequest(_Req, frozen=True, kw_only=True):
    call_id: ClientId | None = None


Ack = dict[str, Any]
Handler = Callable[[SocketSession, Principal, Any], Awaitable[Ack]]


def ok(**data: Any) -> Ack:
    return {"ok": True, **data}


def _decode(data: Any, type_: type[Any]) -> Any:
    if not isinstance(data, dict):
        raise CallError("bad_request", "the payload must be a JSON object")
    try:
        return msgspec.convert(data, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise CallError("bad_request", str(exc)[:200]) from None


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


class GuardedServer(socketio.AsyncServer):  # type: ignore[misc]
    """An AsyncServer that refuses malformed Socket.IO packets with a warning, not a crash
    of the message handler (the socket stays open; the packet is dropped)."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            log.warning("socket.malformed_packet", error=type(exc).__name__)


class Signaling:
    """The Socket.IO server of one gateway."""

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
        self.relayed = 0
        self._handlers: dict[str, Handler] = {
            "call:initiate": self._initiate,
            "call:accept": self._accept,
            "call:join": self._join,
            "call:decline": self._decline,
            "call:leave": self._leave,
            "call:end": self._end,
            "call:signal": self._signal,
            "call:toggle-audio": self._toggle_audio,
            "call:toggle-video": self._toggle_video,
            "call:heartbeat": self._heartbeat,
            "call:request-ice-servers": self._ice,
        }
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        for name in self._handlers:
            self.sio.on(name, self._bound(name))
        self.sio.on("*", self._on_unknown)

    def attach(self, delivery: Delivery) -> None:
        self.delivery = delivery

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
        session = await self.delivery.detach(sid)
        if session is None:
            return
        async with session.lock:  # an event in hand (an accept binding this socket) ends first
            pass
        if session.call_id is None or session.participant_id is None:
            return
        if any(
            s.call_id == session.call_id and s.participant_id == session.participant_id
            for s in self.delivery.sessions.values()
        ):
            return  # another local socket holds this participant
        try:
            outcome = await self.calls.disconnect(
                session.call_id, session.participant_id, session.resume_hash
            )
            if outcome is not None:
                await self.calls.store.publish(outcome)
        except Exception as exc:
            log.warning(
                "socket.disconnect_failed",
                call_id=session.call_id,
                participant_id=session.participant_id,
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
            async with session.lock:  # one event of a socket at a time, in arrival order
                return await self._handlers[name](session, principal, data)
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

    async def _refuse(
        self, sid: str, name: str, err: CallError, session: SocketSession | None
    ) -> Ack:
        body = {**err.as_dict(), "event": name}
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

    # --- helpers -------------------------------------------------------------------------
    def _joined_payload(self, joined: Joined, principal: Principal) -> Ack:
        state = joined.outcome.state
        return {
            "callId": state.call_id,
            "mode": state.mode,
            "call": sm.call_view(state),
            "participantId": joined.participant_id,
            "resumeToken": joined.resume_token,
            "heartbeatIntervalS": self.settings.call_heartbeat_interval_s,
            **ice_servers(self.settings, principal.principal_id),
        }

    def _bind(self, session: SocketSession, call_id: str, participant_id: str, token: str) -> None:
        assert self.delivery is not None
        for other in self.delivery.sessions.values():
            if other.sid != session.sid and other.participant_id == participant_id:
                other.call_id = other.participant_id = None
        session.call_id = call_id
        session.participant_id = participant_id
        session.resume_hash = sm.hash_token(token)

    def _require_bound(self, session: SocketSession, call_id: str) -> str:
        if session.call_id != call_id or session.participant_id is None:
            raise CallError("not_in_call", "this socket is not in that call")
        return session.participant_id

    # --- handlers ------------------------------------------------------------------------
    async def _initiate(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req: InitiateRequest = _decode(data, InitiateRequest)
        joined = await self.calls.start(who, req.conversation_id, req.media)
        self._bind(session, joined.outcome.call_id, joined.participant_id, joined.resume_token)
        await self.calls.store.publish(joined.outcome)
        return ok(**self._joined_payload(joined, who))

    async def _accept(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        return await self._enter(session, who, _decode(data, JoinRequest), "call:started")

    async def _join(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        return await self._enter(session, who, _decode(data, JoinRequest), "call:joined")

    async def _enter(
        self, session: SocketSession, who: Principal, req: JoinRequest, event: str
    ) -> Ack:
        joined = await self.calls.join(who, req.call_id, req.resume_token)
        self._bind(session, req.call_id, joined.participant_id, joined.resume_token)
        await self.calls.store.publish(joined.outcome)
        payload = self._joined_payload(joined, who)
        if joined.outcome.result.get("resumed"):
            payload["resumed"] = True
        await self.sio.emit(
            event, {k: v for k, v in payload.items() if k != "resumeToken"}, to=session.sid
        )
        return ok(**payload)

    async def _decline(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req: CallRef = _decode(data, CallRef)
        outcome = await self.calls.decline(who, req.call_id)
        await self.calls.store.publish(outcome)
        return ok(status=outcome.state.status)

    async def _leave(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req: LeaveRequest = _decode(data, LeaveRequest)
        leaving_self = req.participant_id in (None, session.participant_id)
        outcome = await self.calls.leave(who, req.call_id, req.participant_id)
        if leaving_self and session.call_id == req.call_id:
            session.call_id = session.participant_id = None
        await self.calls.store.publish(outcome)
        return ok(status=outcome.state.status)

    async def _end(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req: CallRef = _decode(data, CallRef)
        outcome = await self.calls.end(who, req.call_id)
        # The socket stays bound: it receives call:ended like everyone (events of an ended
        # call are refused anyway, and the next initiate or join rebinds it).
        await self.calls.store.publish(outcome)
        return ok(status=outcome.state.status, reason=outcome.state.end_reason)

    async def _signal(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req: SignalRequest = _decode(data, SignalRequest)
        sender = self._require_bound(session, req.call_id)
        if req.from_ is not None and req.from_ != sender:
            raise CallError("forbidden", "a client cannot speak for someone else")
        if req.to == sender:
            raise CallError("bad_request", "cannot signal yourself")
        payload: dict[str, Any] = {"callId": req.call_id, "from": sender, "type": req.type}
        if req.type == "ice-candidate":
            payload["candidate"] = check_candidate(req.candidate, self.settings.max_candidate_bytes)
        else:
            payload["sdp"] = check_sdp(req.sdp, self.settings.max_sdp_bytes)
        target = await self._peer(req.call_id, sender, req.to)
        assert self.delivery is not None
        await self.delivery.send(
            target.principal_id,
            "call:signal",
            payload,
            call_id=req.call_id,
            participant_id=target.participant_id,
        )
        self.relayed += 1
        return ok()

    async def _peer(self, call_id: str, sender: str, to: str) -> CallParticipantState:
        """The target participant, if both it and the sender are in the call."""
        for fresh in (False, True):
            state = await self.calls.current(call_id, fresh=fresh)
            me = sm.find_participant(state, sender)
            target = sm.find_participant(state, to)
            if state.status != "ended" and me is not None and target is not None:
                return target
        if state.status == "ended":
            raise CallError("call_ended", "the call has ended")
        if me is None:
            raise CallError("not_in_call", "you are no longer in this call")
        raise CallError("not_in_call", "the target is not a participant of this call")

    async def _toggle(
        self, session: SocketSession, data: Any, kind: Literal["audio", "video"]
    ) -> Ack:
        req: ToggleRequest = _decode(data, ToggleRequest)
        pid = self._require_bound(session, req.call_id)
        outcome = await self.calls.set_media(
            req.call_id,
            pid,
            audio=req.enabled if kind == "audio" else None,
            video=req.enabled if kind == "video" else None,
        )
        if outcome is not None:
            await self.calls.store.publish(outcome)
        return ok(**{f"{kind}Enabled": req.enabled})

    async def _toggle_audio(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        return await self._toggle(session, data, "audio")

    async def _toggle_video(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        return await self._toggle(session, data, "video")

    async def _heartbeat(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req: CallRef = _decode(data, CallRef)
        pid = self._require_bound(session, req.call_id)
        outcome = await self.calls.heartbeat(req.call_id, pid)
        if outcome is not None:
            await self.calls.store.publish(outcome)
        return ok(intervalS=self.settings.call_heartbeat_interval_s, at=time.time())

    async def _ice(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        _decode(data if data not in (None, []) else {}, IceRequest)
        return ok(**ice_servers(self.settings, who.principal_id))
