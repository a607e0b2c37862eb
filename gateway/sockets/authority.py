"""Live sockets keep their right to be here: expired tokens and revoked guests are shown out.

A token is checked when a socket connects, and a socket lives for hours; so every
``SOCKET_AUTH_CHECK_INTERVAL_S`` this gateway re-checks its own sockets:

- a token past its ``exp`` (and not renewed with ``call:refresh-token``): the socket is told
  (``call:error {code: "unauthorized", event: "auth"}``) and disconnected; its participant
  keeps the reconnect grace period, so a client that reconnects with a fresh token resumes;
- a guest whose share link was revoked (or removed): removed from its call (reason
  ``removed``), told (``forbidden``) and disconnected. Revoking a link removes its guests
  from the conversation's call at once; this catches a guest whose join raced the
  revocation, and guests on every gateway.
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from gateway.calls import CallService
from gateway.delivery import Delivery
from gateway.errors import CallError
from gateway.sockets.server import SocketServer
from schemas.logs import get_logger

log = get_logger("gateway.sockets.authority")

LinkRevoked = Callable[[str], Awaitable[bool]]
"""``revoked(link_id)``: whether a share link is revoked or gone."""


class SocketAuthority:
    """The periodic re-check (see the module docstring)."""

    def __init__(
        self,
        server: SocketServer,
        delivery: Delivery,
        calls: CallService,
        link_revoked: LinkRevoked,
        interval_s: float,
    ) -> None:
        self._server = server
        self._delivery = delivery
        self._calls = calls
        self._link_revoked = link_revoked
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.expired = 0
        self.revoked = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="socket-authority")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check_once(time.time())
            except Exception as exc:  # one bad round must not end the checks
                log.warning("sockets.recheck_failed", error=type(exc).__name__)

    async def check_once(self, now: float) -> int:
        """One round; returns how many sockets were shown out."""
        ended = 0
        for sid in self._server.expired_sessions(now):
            self.expired += 1
            ended += 1
            await self._server.end_session(sid, CallError("unauthorized", "the token has expired"))
        guests: dict[str, list[str]] = {}
        for sid, principal in list(self._server.principals.items()):
            if principal.kind == "guest" and principal.link_id is not None:
                guests.setdefault(principal.link_id, []).append(sid)
        for link_id, sids in guests.items():
            if not await self._link_revoked(link_id):
                continue
            for sid in sids:
                self.revoked += 1
                ended += 1
                await self._show_out_guest(sid)
        return ended

    async def _show_out_guest(self, sid: str) -> None:
        session = self._delivery.sessions.get(sid)
        principal = self._server.principals.get(sid)
        if session is not None and session.call_id and principal is not None:
            with contextlib.suppress(CallError):
                await self._calls.remove_principals(
                    session.call_id, {principal.principal_id}, by=None
                )
        await self._server.end_session(
            sid, CallError("forbidden", "the share link of this guest was revoked")
        )
