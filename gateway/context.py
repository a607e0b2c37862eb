"""What the REST routes need, built once the bus is up, injected as FastAPI dependencies."""

import hmac
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.archive.repository import ArchiveRepository
from gateway.calls import CallService
from gateway.client_address import ClientAddress
from gateway.conversations import Conversations
from gateway.errors import CallError
from gateway.guests import Guests
from gateway.rate_limit import RateLimiter
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, TokenService


@dataclass
class GatewayContext:
    settings: GatewaySettings
    tokens: TokenService
    conversations: Conversations
    guests: Guests
    calls: CallService
    limiter: RateLimiter
    #: The archive in MongoDB (``MONGO_URL``), read by the history endpoints; ``None``: off.
    history: ArchiveRepository | None = None
    #: Who the client behind a request is (``TRUSTED_PROXIES``), for per-client limits.
    addresses: ClientAddress = field(default_factory=lambda: ClientAddress(()))


_bearer = HTTPBearer(auto_error=False, description="A user JWT or a guest token")


def get_context(request: Request) -> GatewayContext:
    ctx: GatewayContext | None = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise CallError("unavailable", "the gateway is starting")
    return ctx


Ctx = Annotated[GatewayContext, Depends(get_context)]


def current_principal(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise CallError("unauthorized", "a bearer token is required")
    return ctx.tokens.verify(credentials.credentials)


Caller = Annotated[Principal, Depends(current_principal)]


def operator(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = ctx.settings.operator_token
    if not expected:
        raise CallError("not_found", "operator endpoints are disabled")
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise CallError("unauthorized", "operator token required")


Operator = Annotated[None, Depends(operator)]
