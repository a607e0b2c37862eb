"""The node's load report on ``media.node.heartbeat``, for placement."""

import asyncio
import contextlib
import os
from collections.abc import Callable

import psutil

from media_node.calls import SessionRegistry
from media_node.forwarder import ForwardingStats
from media_node.tap import TapStats
from schemas import subjects
from schemas.bus import Bus
from schemas.logs import get_logger
from schemas.media import MediaNodeHeartbeat

log = get_logger("media_node.placement")


class PlacementReporter:
    """Publishes a :class:`MediaNodeHeartbeat` every interval and on each state change."""

    def __init__(
        self,
        *,
        bus: Bus,
        node_id: str,
        registry: SessionRegistry,
        forwarding: ForwardingStats,
        taps: TapStats,
        interval_s: float,
        draining: Callable[[], bool],
    ) -> None:
        self._bus = bus
        self.node_id = node_id
        self._registry = registry
        self._forwarding = forwarding
        self._taps = taps
        self.interval_s = interval_s
        self._draining = draining
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> MediaNodeHeartbeat:
        reg = self._registry
        return MediaNodeHeartbeat(
            node_id=self.node_id,
            state="draining" if self._draining() else "ready",
            calls=len(reg.rooms),
            participants=reg.participants,
            capacity=reg.capacity,
            free=max(0, reg.capacity - reg.participants),
            published_tracks=reg.published_tracks,
            forwarded_streams=reg.forwarded_streams,
            cpu_percent=self._process.cpu_percent(None),
            cpu_count=psutil.cpu_count() or 1,
            frames_forwarded_total=self._forwarding.frames_forwarded,
            frames_dropped_total=self._forwarding.frames_dropped + self._forwarding.frames_held,
            keyframe_requests_total=reg.keyframe_requests,
            tap_dropped_total=self._taps.packets_dropped,
            interval_s=self.interval_s,
        )

    async def beat(self) -> None:
        try:
            await self._bus.publish(subjects.MEDIA_NODE_HEARTBEAT, self.snapshot())
        except Exception as exc:  # a missed report is not worth dying for
            log.warning("placement.report_failed", error=type(exc).__name__)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.beat()
                await asyncio.sleep(self.interval_s)

        self._task = asyncio.get_running_loop().create_task(loop(), name="placement-report")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
