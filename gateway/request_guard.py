"""The REST app's guard on request bodies: a size cap, and text that can be encoded.

Socket.IO caps each message (``max_http_buffer_size``); without this, REST would read a
body of any size, also before authentication. The guard reads at most
``MAX_REQUEST_BYTES`` (a ``Content-Length`` above it is refused before anything is read; a
chunked body is counted as it arrives) and answers 413 ``too_large``. A JSON body holding
text that cannot be encoded (an unpaired surrogate: half an emoji) is refused with 422
``bad_request`` here, once, instead of failing deep in a handler as a 500.
"""

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import CallError
from gateway.validation import check_text

_JSON_TYPES = ("application/json", "+json")


def _refusal(status: int, code: str, message: str) -> tuple[dict[str, Any], bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, body


class RequestGuard:
    """ASGI middleware (see the module docstring); Socket.IO paths are left alone."""

    def __init__(self, app: ASGIApp, max_bytes: int, skip_prefix: str = "/socket.io") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.skip_prefix = skip_prefix
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.skip_prefix):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await self._refuse(send, 400, "bad_request", "Content-Length is not a number")
                return
            if too_big:
                await self._refuse_large(send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse_large(send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        if body and any(t in content_type for t in _JSON_TYPES):
            try:
                check_text(json.loads(body))
            except CallError as err:
                await self._refuse(send, err.http_status, err.code, err.message)
                return
            except (ValueError, RecursionError):
                pass  # not JSON: the route's own parsing answers it (422 / 400)

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse_large(self, send: Send) -> None:
        await self._refuse(
            send, 413, "too_large", f"the request body is larger than {self.max_bytes} bytes"
        )

    async def _refuse(self, send: Send, status: int, code: str, message: str) -> None:
        self.refused += 1
        start, body = _refusal(status, code, message)
        await send(start)
        await send({"type": "http.response.body", "body": body})
