"""The web client, served at ``/`` from the gateway's own origin.

``make web`` builds it into ``web/dist`` (``index.html`` plus content-hashed files under
``assets/``); ``WEB_CLIENT_DIR`` points elsewhere (a container image). ``/`` and ``/join``
(the path of guest share links) answer the page; ``/assets/<name>`` the hashed files, cached
for good. The API stays under ``/api`` and Socket.IO under ``/socket.io``: nothing here
shadows them, and an unknown path still gets the API's typed 404.

The page may load nothing from another origin (Content-Security-Policy ``'self'`` only), so a
deployment cannot quietly start pulling scripts, fonts or styles from a CDN.
"""

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from gateway.errors import CallError

DEFAULT_DIST = Path(__file__).resolve().parents[1] / "web" / "dist"

#: Only what this page does: its own scripts and styles, media from the camera and peers,
#: the gateway's REST and WebSocket on the same origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # Share links carry their token in the URL: never send it anywhere as a referrer.
    "Referrer-Policy": "no-referrer",
}
_ASSET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
}

NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Meeshy calls: web client not built</title></head><body>
<h1>The web client is not built</h1>
<p>Run <code>make web</code> (or <code>make run</code>, which builds it), then reload.
The API is up: <a href="/openapi.json">/openapi.json</a>.</p></body></html>"""

router = APIRouter(include_in_schema=False)


def dist_dir(request: Request) -> Path:
    ctx = getattr(request.app.state, "ctx", None)
    configured = ctx.settings.web_client_dir if ctx is not None else ""
    return Path(configured) if configured else DEFAULT_DIST


def _page(request: Request) -> Response:
    index = dist_dir(request) / "index.html"
    if not index.is_file():
        return HTMLResponse(NOT_BUILT, status_code=503, headers=SECURITY_HEADERS)
    # The page names the hashed assets of its build: always ask for the current one.
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(index, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/")
async def index(request: Request) -> Response:
    return _page(request)


@router.get("/join")
async def join(request: Request) -> Response:
    return _page(request)


@router.get("/assets/{name}")
async def asset(name: str, request: Request) -> Response:
    if not _ASSET_NAME.fullmatch(name) or name.startswith("."):
        raise CallError("not_found", "no such file")
    path = dist_dir(request) / "assets" / name
    if not path.is_file():
        raise CallError("not_found", "no such file")
    headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"}
    media_type = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=headers)
