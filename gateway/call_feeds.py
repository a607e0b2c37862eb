"""Per-call subscriptions that follow this gateway's sockets.

When a call gains its first local socket, the gateway subscribes to that call's subjects
the registered feeds name (its commands, its media-node events, its captions); when it
loses its last, it unsubscribes. So a gateway receives only what concerns the calls it
serves, however many calls the system carries.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.subscription import Subscription

from schemas.bus import Bus, Handler
from schemas.logs import get_logger

log = get_logger("gateway.call_feeds")


@dataclass(frozen=True, slots=True)
class Feed:
    """One per-call subscription: ``subject(call_id)``, decoded as ``type_``."""

    name: str
    subject: Callable[[str], str]
    type_: Any
    handler: Handler[Any]


class CallFeeds:
    """Subscribes each registered feed for every call that has a socket here."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._feeds: list[Feed] = []
        self._subs: dict[str, list[Subscription]] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        self.subscribed = 0

    def add(self, feed: Feed) -> None:
        self._feeds.append(feed)

    def watch(self, call_id: str, present: bool) -> None:
        """:class:`gateway.delivery.CallWatch`: called when a call gains or loses sockets."""
        previous = self._pending.get(call_id)
        task = asyncio.get_running_loop().create_task(self._change(call_id, present, previous))
        self._pending[call_id] = task
        task.add_done_callback(
            lambda t: self._pending.pop(call_id, None) if self._pending.get(call_id) is t else None
        )

    async def _change(
        self, call_id: str, present: bool, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)  # keep the order of changes
        if present and call_id not in self._subs:
            subs = []
            for feed in self._feeds:
                try:
                    subs.append(
                        await self._bus.subscribe(feed.subject(call_id), feed.type_, feed.handler)
                    )
                except Exception as exc:
                    log.warning(
                        "call_feeds.subscribe_failed",
                        call_id=call_id,
                        feed=feed.name,
                        error=type(exc).__name__,
                    )
            self._subs[call_id] = subs
            self.subscribed += 1
        elif not present:
            for sub in self._subs.pop(call_id, []):
                try:
                    await sub.unsubscribe()
                except Exception as exc:  # closed connection while draining
                    log.debug("call_feeds.unsubscribe_failed", error=type(exc).__name__)

    async def settled(self) -> None:
        """Wait until every pending (un)subscription is done (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending.values()), return_exceptions=True)

    @property
    def calls(self) -> int:
        return len(self._subs)
