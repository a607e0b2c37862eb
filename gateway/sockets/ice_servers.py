"""``call:request-ice-servers {callId}``: STUN and TURN servers, with fresh credentials, for
the call this socket is in (never for a call it is not in), short-lived (``TURN_TTL_S``, at
most until the socket's token expires)."""

from typing import Any

from gateway.delivery import SocketSession
from gateway.ice import ice_servers
from gateway.settings import GatewaySettings
from gateway.sockets.requests import Ack, Handlers, IceRequest, decode, ok, require_bound
from gateway.tokens import Principal


class IceServers:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    def handlers(self) -> Handlers:
        return {"call:request-ice-servers": self.request}

    async def request(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, IceRequest)
        participant_id = require_bound(session, req.call_id)
        return ok(
            **ice_servers(
                self.settings,
                call_id=req.call_id,
                participant_id=participant_id,
                not_after=who.expires_at,
            )
        )
