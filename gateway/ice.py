"""ICE servers for browsers: STUN, and TURN with coturn's shared-secret (REST API) credentials.

``username = "<expiry unix time>:<call_id>.<participant_id>"`` and
``credential = base64(HMAC-SHA1(secret, username))``; coturn (``use-auth-secret``,
``static-auth-secret``) checks both without any call to us. Credentials are handed only to a
participant of a call, name that call and participant (coturn's logs say whose relay it is),
and are short-lived: ``TURN_TTL_S`` (10 minutes by default), never past the expiry of the
caller's own token. Clients ask again with ``call:request-ice-servers`` before
``expiresAt``.
"""

import base64
import hashlib
import hmac
import time
from typing import Any

from gateway.settings import GatewaySettings


def turn_credentials(secret: str, username_tail: str, ttl_s: float, now: float) -> tuple[str, str]:
    username = f"{int(now + ttl_s)}:{username_tail}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def _urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def ice_servers(
    settings: GatewaySettings,
    *,
    call_id: str,
    participant_id: str,
    not_after: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The ``RTCConfiguration.iceServers`` of one participant of one call, and when its
    TURN credentials expire (``not_after``: the caller's token expiry, a hard cap)."""
    now = time.time() if now is None else now
    servers: list[dict[str, Any]] = []
    stun = _urls(settings.stun_urls)
    if stun:
        servers.append({"urls": stun})
    turn = _urls(settings.turn_urls)
    ttl = settings.turn_ttl_s
    if not_after is not None:
        ttl = max(1.0, min(ttl, not_after - now))
    expires_at: float | None = None
    if turn and settings.turn_secret:
        username, credential = turn_credentials(
            settings.turn_secret, f"{call_id}.{participant_id}", ttl, now
        )
        servers.append({"urls": turn, "username": username, "credential": credential})
        expires_at = float(int(now + ttl))
    return {"iceServers": servers, "ttlS": ttl, "expiresAt": expires_at}
