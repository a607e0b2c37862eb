"""ICE servers for browsers: STUN, and TURN with coturn's shared-secret (REST API) credentials.

``username = "<expiry unix time>:<principal id>"`` and
``credential = base64(HMAC-SHA1(secret, username))``; coturn (``use-auth-secret``,
``static-auth-secret``) checks both without any call to us. The TTL defaults to longer than
the longest call; clients ask again with ``call:request-ice-servers`` before it runs out.
"""

import base64
import hashlib
import hmac
import time
from typing import Any

from gateway.settings import GatewaySettings


def turn_credentials(secret: str, principal_id: str, ttl_s: float, now: float) -> tuple[str, str]:
    username = f"{int(now + ttl_s)}:{principal_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def _urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def ice_servers(
    settings: GatewaySettings, principal_id: str, now: float | None = None
) -> dict[str, Any]:
    """The ``RTCConfiguration.iceServers`` list for one person, and when it expires."""
    now = time.time() if now is None else now
    servers: list[dict[str, Any]] = []
    stun = _urls(settings.stun_urls)
    if stun:
        servers.append({"urls": stun})
    turn = _urls(settings.turn_urls)
    expires_at: float | None = None
    if turn and settings.turn_secret:
        username, credential = turn_credentials(
            settings.turn_secret, principal_id, settings.turn_ttl_s, now
        )
        servers.append({"urls": turn, "username": username, "credential": credential})
        expires_at = float(int(now + settings.turn_ttl_s))
    return {"iceServers": servers, "ttlS": settings.turn_ttl_s, "expiresAt": expires_at}
