"""P2P signals over Socket.IO: offers, answers, ICE candidates, to one participant.

The sender is stamped by the gateway (a client cannot speak for someone else); the target
must be in the same call; the signal reaches whichever gateway holds the target's socket
through ``user.<principal_id>.signal``.
"""

from typing import Any

from gateway import state_machine as sm
from gateway.calls import CallService
from gateway.delivery import Delivery, SocketSession
from gateway.errors import CallError
from gateway.settings import GatewaySettings
from gateway.sockets.requests import Ack, Handlers, SignalRequest, decode, ok, require_bound
from gateway.tokens import Principal
from gateway.validation import check_candidate, check_sdp
from schemas.call_state import CallParticipantState


class SignalRelay:
    """``call:signal``: relays one signal to one participant of the same call."""

    def __init__(self, settings: GatewaySettings, calls: CallService, delivery: Delivery) -> None:
        self.settings = settings
        self.calls = calls
        self.delivery = delivery
        self.relayed = 0

    def handlers(self) -> Handlers:
        return {"call:signal": self.signal}

    async def signal(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, SignalRequest)
        sender = require_bound(session, req.call_id)
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
