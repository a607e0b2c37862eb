"""``call:request-ice-servers``: STUN and TURN servers (with fresh credentials) for a client."""

from typing import Any

from gateway.delivery import SocketSession
from gateway.ice import ice_servers
from gateway.settings import GatewaySettings
from gateway.sockets.requests import Ack, Handlers, IceRequest, decode, ok
from gateway.tokens import Principal


class IceServers:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    def handlers(self) -> Handlers:
        return {"call:request-ice-servers": self.request}

    async def request(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        decode(data if data not in (None, []) else {}, IceRequest)
        return ok(**ice_servers(self.settings, who.principal_id))
