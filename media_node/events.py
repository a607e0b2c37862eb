"""The one path the node's media events leave by: an ordered, bounded queue to NATS.

Everything that changes what a client must know (slot maps, video demand, leg state,
session closed) calls :meth:`MediaEvents.emit`, synchronously, from the forwarding path or
a request. One task publishes them in order on ``media.evt.<call_id>.<name>`` (core NATS).
The queue is bounded: when NATS is slower than the node for long, the oldest events are
dropped and counted (a later ``SlotsChanged`` carries the full map again).
"""

import asyncio
import collections
import contextlib

from schemas import subjects
from schemas.bus import Bus
from schemas.logs import get_logger
from schemas.media_events import MediaEvent

log = get_logger("media_node.events")


class MediaEvents:
    """See the module docstring."""

    def __init__(self, bus: Bus | None, *, capacity: int = 10000) -> None:
        self._bus = bus
        self._queue: collections.deque[MediaEvent] = collections.deque()
        self._capacity = capacity
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0
        self.failed = 0

    def emit(self, event: MediaEvent) -> None:
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._ready.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="media-events")

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                await self._publish(self._queue.popleft())

    async def _publish(self, event: MediaEvent) -> None:
        if self._bus is None:
            return
        subject = subjects.media_event(event.call_id, type(event).subject_name)
        try:
            await self._bus.publish(subject, event)
            self.published += 1
        except Exception as exc:  # the bus is down: the event is lost, forwarding goes on
            self.failed += 1
            log.warning("events.publish_failed", call_id=event.call_id, error=type(exc).__name__)

    async def flush(self, timeout: float = 5.0) -> None:
        """Publish what is queued (at shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._queue:
                    await self._publish(self._queue.popleft())

    async def stop(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
