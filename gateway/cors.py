"""Which web pages may talk to this gateway from another site (Socket.IO and REST).

By default none: only pages served by the gateway itself (same origin), which is where the
web client lives. ``CORS_ORIGINS`` names the others (the messenger's web app); ``*`` opens
it to any site and is refused in production mode. A request without an ``Origin`` header
does not come from a browser page, so CORS does not apply to it (tokens still do).
"""

from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from gateway.settings import GatewaySettings


class OriginPolicy:
    """``allows(origin, environ)``: python-engineio's callable ``cors_allowed_origins``."""

    def __init__(self, settings: GatewaySettings) -> None:
        origins = settings.origins()
        self.any = origins == "*"
        self.listed = frozenset(origins) if isinstance(origins, list) else frozenset()

    def allows(self, origin: str | None, environ: dict[str, Any] | None = None) -> bool:
        if origin is None or self.any or origin in self.listed:
            return True
        if environ is None:
            return False
        # Same origin: the page's host is the one the request was sent to (behind a proxy
        # terminating TLS the scheme differs, and a browser cannot forge either header).
        netloc = urlsplit(origin).netloc.lower()
        hosts = {
            str(environ.get(name, "")).split(",")[0].strip().lower()
            for name in ("HTTP_HOST", "HTTP_X_FORWARDED_HOST")
        }
        return bool(netloc) and netloc in hosts

    def install(self, app: FastAPI) -> None:
        """Answer CORS requests on REST for the listed origins (same origin needs none)."""
        if self.any or self.listed:
            app.add_middleware(
                CORSMiddleware,
                allow_origins=["*"] if self.any else sorted(self.listed),
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
                max_age=600,
            )
