"""What the two peer connections of a session share: negotiation steps with deadlines,
connection state, and a close that never hangs or leaks.

aiortc's negotiation steps (``setRemoteDescription``, ``createAnswer``/``createOffer``,
``setLocalDescription``, which gathers ICE candidates) have no timeout of their own. Each
step here runs as a task awaited with ``negotiation_timeout_s``; on timeout the request
fails with ``unavailable`` but the task is *not* cancelled (cancelling aiortc while it
gathers leaks the sockets it opens next): the leg closes its peer connection once the step
ends. A leg that does not reach ``connected`` within ``connect_timeout_s`` of its SDP
exchange is failed and closed (the client publishes or opens the downlink again).
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from schemas.bus import RpcFailure
from schemas.logs import get_logger

log = get_logger("media_node.leg")

T = TypeVar("T")

StateSink = Callable[["Leg", str, str], None]
"""(leg, state, reason): ``connected``, ``failed`` or ``closed``."""


class Leg:
    """One peer connection of a session (see the module docstring)."""

    name = ""

    def __init__(
        self,
        pc: Any,
        *,
        on_state: StateSink,
        negotiation_timeout_s: float,
        connect_timeout_s: float,
        log_fields: dict[str, str],
    ) -> None:
        self.pc = pc
        self._on_state = on_state
        self.negotiation_timeout_s = negotiation_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._log_fields = log_fields
        self._steps: set[asyncio.Task[Any]] = set()
        self._connect_timer: asyncio.TimerHandle | None = None
        self.state = "new"
        self.closed = False
        self._closing: asyncio.Task[None] | None = None
        #: Told once the peer connection is closed (the node's set of open legs).
        self.on_closed: Callable[[Leg], None] | None = None
        pc.on("connectionstatechange", self._pc_state_changed)

    async def step(self, awaitable: Awaitable[T], what: str) -> T:
        """One aiortc negotiation step, with the leg's deadline (see the module docstring)."""
        if self.closed:
            raise RpcFailure("not_found", "this session was closed")
        task: asyncio.Task[T] = asyncio.ensure_future(awaitable)
        self._steps.add(task)
        task.add_done_callback(self._steps.discard)
        try:
            result = await asyncio.wait_for(asyncio.shield(task), self.negotiation_timeout_s)
        except TimeoutError:
            log.warning("leg.negotiation_timeout", leg=self.name, step=what, **self._log_fields)
            self.fail("negotiation_timeout")
            raise RpcFailure("unavailable", f"{what} timed out; try again") from None
        if self.closed:
            raise RpcFailure("not_found", "this session was closed")
        return result

    def exchanged(self) -> None:
        """Both descriptions are set: the leg must connect before the deadline."""
        if self.closed or self.state == "connected":
            return
        self.state = "connecting"
        loop = asyncio.get_running_loop()
        self._connect_timer = loop.call_later(self.connect_timeout_s, self._connect_timeout)

    def _connect_timeout(self) -> None:
        self._connect_timer = None
        if not self.closed and self.state != "connected":
            self.fail("connect_timeout")

    def _pc_state_changed(self) -> None:
        if self.closed:
            return
        state = self.pc.connectionState
        if state == "connected" and self.state != "connected":
            self.state = "connected"
            if self._connect_timer is not None:
                self._connect_timer.cancel()
                self._connect_timer = None
            self.on_connected()
            self._on_state(self, "connected", "")
        elif state == "failed":
            self.fail("ice_or_dtls_failed")
        elif state == "closed":
            self.fail("remote_closed")  # the client closed its peer connection (DTLS close)

    def on_connected(self) -> None:
        """Subclasses: the peer connection is connected."""

    def fail(self, reason: str) -> None:
        """Report the leg failed and close it in the background."""
        if self.closed:
            return
        log.info("leg.failed", leg=self.name, reason=reason, **self._log_fields)
        self._on_state(self, "failed", reason)
        self.start_close()

    def start_close(self) -> asyncio.Task[None]:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self.close(), name=f"close:{self.name}"
            )
        return self._closing

    async def close(self) -> None:
        """Close the peer connection once any negotiation step in hand has ended."""
        if self.closed:
            if self._closing is not None and self._closing is not asyncio.current_task():
                await asyncio.shield(self._closing)
            return
        self.closed = True
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self.release()
        if self._steps:
            await asyncio.wait(set(self._steps), timeout=self.negotiation_timeout_s + 5)
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), 10)
        finally:
            self.state = "closed"
            if self.on_closed is not None:
                self.on_closed(self)

    def release(self) -> None:
        """Subclasses: drop media state (synchronously, before the peer connection closes)."""
