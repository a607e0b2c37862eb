"""Typed refusals the gateway answers with: a code, a reason, and the HTTP status for REST.

The same :class:`CallError` becomes ``{"ok": false, "error": {code, message}}`` in a
Socket.IO acknowledgement, a ``call:error`` event, or an HTTP 4xx body. Messages never carry
identities or transcripts, and no traceback ever reaches a client.
"""

from typing import Literal

ErrorCode = Literal[
    "unauthorized",
    "forbidden",
    "not_found",
    "bad_request",
    "conflict",
    "call_ended",
    "not_in_call",
    "rate_limited",
    "unknown_event",
    "unavailable",
    "too_large",
    "internal",
]

HTTP_STATUS: dict[str, int] = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "bad_request": 422,
    "conflict": 409,
    "call_ended": 409,
    "not_in_call": 403,
    "rate_limited": 429,
    "unknown_event": 400,
    "unavailable": 503,
    "too_large": 413,
    "internal": 500,
}


class CallError(Exception):
    """A refusal with a machine-readable code and a human-readable reason."""

    def __init__(
        self, code: ErrorCode, message: str, details: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.details = details or {}

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, **self.details}
