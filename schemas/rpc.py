"""The typed error reply of every request/reply exchange.

A responder that refuses or fails a request answers with :class:`RpcError` and the header
``Meeshy-Rpc-Status: error``; the requester raises :class:`schemas.errors.RpcFailed`.
"""

from typing import Literal

from schemas.message import Message

RpcErrorCode = Literal[
    "bad_request", "not_found", "conflict", "unavailable", "draining", "internal"
]


class RpcError(Message, frozen=True, kw_only=True, tag="rpc.error"):
    """Why a request failed. ``message`` never contains transcripts or identities."""

    code: RpcErrorCode
    message: str
