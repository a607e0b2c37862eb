"""The node's load report on ``media.node.heartbeat``, for placement."""

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from media_node.calls import SessionRegistry
from media_node.inbound import InboundStats
from media_node.slot import ForwardingStats
from media_node.tap import TapStats
from media_node.transport import TransportStats
from schemas import subjects
from schemas.bus import Bus
from schemas.logs import get_logger
from schemas.media import MediaNodeHeartbeat

log = get_logger("media_node.placement")

#: A subscriber's bandwidth estimate counts for this long after its last REMB.
ESTIMATE_S = 5.0


@dataclass(slots=True)
class NodeStats:
    """Every counter of a node, in one place."""

    forwarding: ForwardingStats
    inbound: InboundStats
    transports: TransportStats
    taps: TapStats


class PlacementReporter:
    """Publishes a :class:`MediaNodeHeartbeat` every interval and on each state change."""

    def __init__(
        self,
        *,
        bus: Bus,
        node_id: str,
        registry: SessionRegistry,
        stats: NodeStats,
        interval_s: float,
        draining: Callable[[], bool],
    ) -> None:
        self._bus = bus
        self.node_id = node_id
        self._registry = registry
        self._stats = stats
        self.interval_s = interval_s
        self._draining = draining
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)
        self._task: asyncio.Task[None] | None = None

    def snapshot(self, *, cpu: bool = True) -> MediaNodeHeartbeat:
        reg = self._registry
        sessions = list(reg.sessions.values())
        video_slots = audio_slots = filled = fwd_video = fwd_audio = 0
        published = 0
        forwarded_publishers: set[str] = set()
        estimates: list[int] = []
        now = time.monotonic()
        for session in sessions:
            if session.uplink is not None and session.uplink.state == "connected":
                published += len(session.uplink.kinds)
            down = session.downlink
            if down is not None and down.estimate_bps and now - down.estimate_at < ESTIMATE_S:
                estimates.append(down.estimate_bps)
            for slot in session.slots:
                if slot.video:
                    video_slots += 1
                    if slot.forwarding:
                        filled += 1
                        fwd_video += 1
                        forwarded_publishers.add(slot.showing_id or "")
                else:
                    audio_slots += 1
                    fwd_audio += slot.forwarding
        forwarding = self._stats.forwarding
        inbound = self._stats.inbound
        transports = self._stats.transports
        return MediaNodeHeartbeat(
            node_id=self.node_id,
            state="draining" if self._draining() else "ready",
            calls=len(reg.rooms),
            participants=reg.participants,
            capacity=reg.capacity,
            free=max(0, reg.capacity - reg.participants),
            published_tracks=published,
            forwarded_streams=fwd_video + fwd_audio,
            forwarded_video_streams=fwd_video,
            forwarded_audio_streams=fwd_audio,
            video_slots=video_slots,
            video_slots_filled=filled,
            audio_slots=audio_slots,
            video_publishers_forwarded=len(forwarded_publishers),
            idle_sessions=sum(s.idle for s in sessions),
            downlink_estimate_bps_min=min(estimates, default=0),
            peer_connections=sum(not leg.closed for leg in reg.node.legs),
            udp_ports=self._udp_ports() if cpu else 0,
            tasks=len(asyncio.all_tasks()),
            cpu_percent=self._process.cpu_percent(None) if cpu else 0.0,
            cpu_count=psutil.cpu_count() or 1,
            packets_received_total=transports.rtp_in,
            packets_forwarded_total=forwarding.packets_forwarded,
            packets_dropped_total=forwarding.packets_dropped + transports.send_dropped,
            retransmissions_total=forwarding.retransmissions,
            frames_forwarded_total=forwarding.frames_forwarded,
            frames_dropped_total=forwarding.frames_held,
            keyframe_requests_total=sum(s.keyframes.sent for s in sessions),
            tap_dropped_total=self._stats.taps.packets_dropped,
            forwarding_errors_total=forwarding.errors + inbound.errors + transports.handler_errors,
            interval_s=self.interval_s,
        )

    def _udp_ports(self) -> int:
        try:
            return len(self._process.net_connections(kind="udp"))
        except psutil.Error:
            return -1

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
