"""Call lifecycle over Socket.IO: start, accept/join, decline, leave, end, mute, heartbeat.

Each handler checks the request and runs one call operation (one compare-and-set, whose
events the store publishes). A socket is bound to its participant between the write and the
publication, so the notices projected from the very events it caused already reach it.
"""

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from gateway import state_machine as sm
from gateway.calls import CallService, Joined
from gateway.delivery import Delivery, SocketSession
from gateway.errors import CallError
from gateway.ice import ice_servers
from gateway.presence import PresenceWriter
from gateway.settings import GatewaySettings
from gateway.sockets.requests import (
    Ack,
    CallRef,
    Handlers,
    InitiateRequest,
    JoinRequest,
    LeaveRequest,
    ToggleRequest,
    decode,
    ok,
    require_bound,
)
from gateway.state_machine import Outcome
from gateway.tokens import Principal

Emit = Callable[[str, dict[str, Any], str], Awaitable[None]]


class Lifecycle:
    """The call-lifecycle events of the socket protocol."""

    def __init__(
        self,
        settings: GatewaySettings,
        calls: CallService,
        delivery: Delivery,
        presence: PresenceWriter,
        emit: Emit,
    ) -> None:
        self.settings = settings
        self.calls = calls
        self.delivery = delivery
        self.presence = presence
        self._emit = emit

    def handlers(self) -> Handlers:
        return {
            "call:initiate": self.initiate,
            "call:accept": self.accept,
            "call:join": self.join,
            "call:decline": self.decline,
            "call:leave": self.leave,
            "call:end": self.end,
            "call:toggle-audio": self.toggle_audio,
            "call:toggle-video": self.toggle_video,
        }

    def unordered_handlers(self) -> Handlers:
        """Events that must not wait behind the socket's other events: a heartbeat stuck
        behind a command the call store is slow to take (a leader election of its bucket)
        would let the participant's presence go stale, and get them swept as gone."""
        return {"call:heartbeat": self.heartbeat}

    def _binder(self, session: SocketSession) -> Callable[[Joined], None]:
        def bind(joined: Joined) -> None:
            self.delivery.bind(
                session,
                joined.outcome.call_id,
                joined.participant_id,
                sm.hash_token(joined.resume_token),
            )

        return bind

    def _joined_payload(self, joined: Joined, principal: Principal) -> Ack:
        state = joined.outcome.state
        return {
            "callId": state.call_id,
            "mode": state.mode,
            "call": sm.call_view(state),
            "participantId": joined.participant_id,
            "resumeToken": joined.resume_token,
            "heartbeatIntervalS": self.settings.call_heartbeat_interval_s,
            **ice_servers(
                self.settings,
                call_id=state.call_id,
                participant_id=joined.participant_id,
                not_after=principal.expires_at,
            ),
        }

    async def initiate(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, InitiateRequest)
        joined = await self.calls.start(
            who,
            req.conversation_id,
            req.media,
            bind=self._binder(session),
            languages=req.languages(),
        )
        payload = self._joined_payload(joined, who)
        await self._emit("call:initiated", payload["call"], session.sid)
        return ok(**payload)

    async def accept(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        return await self._enter(session, who, decode(data, JoinRequest), "call:started")

    async def join(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        return await self._enter(session, who, decode(data, JoinRequest), "call:joined")

    async def _enter(
        self, session: SocketSession, who: Principal, req: JoinRequest, event: str
    ) -> Ack:
        joined = await self.calls.join(
            who,
            req.call_id,
            req.resume_token,
            bind=self._binder(session),
            languages=req.languages(),
        )
        payload = self._joined_payload(joined, who)
        if joined.outcome.result.get("resumed"):
            payload["resumed"] = True
        await self._emit(
            event, {k: v for k, v in payload.items() if k != "resumeToken"}, session.sid
        )
        return ok(**payload)

    async def decline(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, CallRef)
        outcome = await self.calls.decline(who, req.call_id)
        return ok(status=outcome.state.status)

    async def leave(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, LeaveRequest)
        leaving_self = req.participant_id in (None, session.participant_id)

        def unbind(_: Outcome) -> None:
            if leaving_self and session.call_id == req.call_id:
                self.delivery.unbind(session)

        outcome = await self.calls.leave(who, req.call_id, req.participant_id, written=unbind)
        return ok(status=outcome.state.status)

    async def end(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, CallRef)
        # The socket stays bound until call:ended is projected to it, like everyone's.
        outcome = await self.calls.end(who, req.call_id)
        return ok(status=outcome.state.status, reason=outcome.state.end_reason)

    async def _toggle(
        self, session: SocketSession, data: Any, kind: Literal["audio", "video"]
    ) -> Ack:
        req = decode(data, ToggleRequest)
        pid = require_bound(session, req.call_id)
        await self.calls.set_media(
            req.call_id,
            pid,
            audio=req.enabled if kind == "audio" else None,
            video=req.enabled if kind == "video" else None,
        )
        return ok(**{f"{kind}Enabled": req.enabled})

    async def toggle_audio(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        return await self._toggle(session, data, "audio")

    async def toggle_video(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        return await self._toggle(session, data, "video")

    async def heartbeat(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, CallRef)
        pid = require_bound(session, req.call_id)
        # Whether heartbeats get through here is what lets a stale one mean "gone" (a
        # prompt answer proves nothing by itself: a throttled heartbeat writes nothing).
        with self.presence.health.watch(proves=False):
            state = await self.calls.current(req.call_id)
            if state.status == "ended":
                raise CallError("call_ended", "the call has ended")
            if sm.find_participant(state, pid) is None:
                state = await self.calls.current(req.call_id, fresh=True)
                if sm.find_participant(state, pid) is None:
                    raise CallError("not_in_call", "you are not in this call")
            await self.presence.beat(state, pid)
        return ok(intervalS=self.settings.call_heartbeat_interval_s, at=time.time())
