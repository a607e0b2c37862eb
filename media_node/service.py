"""The media node service process: wires the SFU parts to the bus and the runtime."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from media_node import aiortc_hooks
from media_node.calls import SelectionSettings, SessionRegistry
from media_node.downlink import Downlink, DownlinkConfig
from media_node.events import MediaEvents
from media_node.inbound import InboundStats
from media_node.placement_report import NodeStats, PlacementReporter
from media_node.rpc import MediaRpc
from media_node.session import NodeContext
from media_node.settings import MediaNodeSettings
from media_node.slot import ForwardingStats
from media_node.speaker import SpeakerChange
from media_node.tap import TapStats, UtteranceCutter
from media_node.transport import TransportStats
from media_node.uplink import Uplink, UplinkConfig
from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import ActiveSpeakerChanged
from schemas.logs import get_logger
from schemas.media import AudioChunk
from schemas.runtime import Service

log = get_logger("media_node")


class MediaNodeService(Service[MediaNodeSettings]):
    """An SFU: sessions over NATS RPC, the packet path, slots, speakers, the audio tap."""

    kind = "media_node"

    async def start(self, bus: Bus) -> None:
        settings = self.settings
        aiortc_hooks.check()  # fail at start, not on the first call, if aiortc moved
        aiortc_hooks.enable_opus_dtx()
        if settings.media_node_ice_addresses:
            aiortc_hooks.restrict_host_addresses(settings.ice_addresses())
        aiortc_hooks.absorb_connect_after_close(
            asyncio.get_running_loop(),
            lambda reason: log.info("leg.connect_after_close", reason=reason),
        )
        self.bus = bus
        self.stats = NodeStats(
            forwarding=ForwardingStats(),
            inbound=InboundStats(),
            transports=TransportStats(),
            taps=TapStats(),
        )
        self.events = MediaEvents(bus)
        self.events.start()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.media_node_tap_threads, thread_name_prefix="audio-tap"
        )

        async def publish_chunk(chunk: AudioChunk) -> None:
            await bus.publish(subjects.audio_chunk(chunk.call_id, chunk.participant_id), chunk)

        negotiation = settings.media_node_negotiation_timeout_s
        connect = settings.media_node_connect_timeout_s
        node = NodeContext(
            node_id=self.service_id,
            uplinks=UplinkConfig(
                inbound=self.stats.inbound,
                transports=self.stats.transports,
                max_hole_s=settings.media_node_max_hole_s,
                nack_retry_s=settings.media_node_nack_retry_s,
                video_bitrate_bps=settings.media_node_uplink_video_bps,
                rtcp_interval_s=settings.media_node_rtcp_interval_s,
                negotiation_timeout_s=negotiation,
                connect_timeout_s=connect,
            ),
            downlinks=DownlinkConfig(
                forwarding=self.stats.forwarding,
                transports=self.stats.transports,
                rtcp_interval_s=settings.media_node_rtcp_interval_s,
                negotiation_timeout_s=negotiation,
                connect_timeout_s=connect,
                history_packets=settings.media_node_nack_history_packets,
            ),
            taps=self.stats.taps,
            executor=self._executor,
            publish_chunk=publish_chunk,
            emit=self.events.emit,
            vad=settings.media_node_vad,
            keyframe_interval_s=settings.media_node_keyframe_interval_s,
            tap_queue_packets=settings.media_node_tap_queue_packets,
            new_cutter=UtteranceCutter.factory(settings),
            public_ip=settings.media_node_public_ip,
            stun_urls=tuple(
                url.strip() for url in settings.media_node_stun_urls.split(",") if url.strip()
            ),
        )
        self.node = node
        self.registry = SessionRegistry(
            node,
            capacity=settings.media_node_max_participants,
            video_slots=settings.media_node_video_slots,
            audio_slots=settings.media_node_audio_slots,
            selection=SelectionSettings(
                speak_after_s=settings.media_node_speak_after_s,
                audio_displace_s=settings.media_node_audio_displace_s,
                demand_hold_s=settings.media_node_demand_hold_s,
            ),
        )
        self.rpc = MediaRpc(
            node_id=self.service_id,
            registry=self.registry,
            accepting=lambda: self.accepting,
            in_flight=self.in_flight,
            on_speaker_change=self._publish_speaker,
        )
        await self.rpc.serve(bus)
        self.reporter = PlacementReporter(
            bus=bus,
            node_id=self.service_id,
            registry=self.registry,
            stats=self.stats,
            interval_s=settings.media_node_report_interval_s,
            draining=lambda: not self.accepting,
        )
        self.reporter.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                self._every(settings.media_node_speaker_interval_s, self._rooms_tick),
                name="rooms",
            ),
            loop.create_task(self._every(0.05, self._legs_tick), name="legs"),
            loop.create_task(
                self._every(settings.media_node_lease_sweep_s, self._sweep_leases),
                name="leases",
            ),
        ]
        log.info("media_node.serving", node_id=self.service_id)

    async def _every(self, interval: float, job: Callable[[float], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job(time.monotonic())
            except Exception as exc:  # one bad pass must not end the periodic work
                log.exception("media_node.periodic_failed", error=type(exc).__name__)

    async def _rooms_tick(self, now: float) -> None:
        for room in list(self.registry.rooms.values()):
            try:
                change = room.tick(now)
            except Exception as exc:  # one call's bad state must not end every call's
                log.exception("room.tick_failed", call_id=room.call_id, error=type(exc).__name__)
                continue
            if change is not None:
                await self._publish_speaker(room.call_id, change)

    async def _legs_tick(self, now: float) -> None:
        for leg in list(self.node.legs):
            if isinstance(leg, Uplink | Downlink):
                try:
                    leg.tick(now)
                except Exception as exc:
                    log.exception("leg.tick_failed", leg=leg.name, error=type(exc).__name__)

    async def _sweep_leases(self, now: float) -> None:
        del now
        for session in self.registry.expired():
            log.info("session.lease_expired", **session.fields)
            change = await self.registry.close(session, "lease_expired")
            if change is not None:
                await self._publish_speaker(session.call_id, change)

    async def _publish_speaker(self, call_id: str, change: SpeakerChange) -> None:
        event = ActiveSpeakerChanged(
            call_id=call_id,
            participant_id=change.participant_id,
            previous_participant_id=change.previous_participant_id,
            level_dbov=change.level_dbov,
            node_id=self.service_id,
        )
        subject = subjects.call_event(call_id, ActiveSpeakerChanged.subject_name)
        try:
            await self.bus.js_publish(subject, event, msg_id=event.event_id)
        except Exception as exc:  # speaker events are advisory; forwarding goes on
            log.warning("speaker.publish_failed", call_id=call_id, error=type(exc).__name__)
            return
        log.info(
            "speaker.changed",
            call_id=call_id,
            participant_id=change.participant_id,
            previous_participant_id=change.previous_participant_id,
        )

    async def stop_accepting(self) -> None:
        """New sessions are refused with ``draining``; sessions in hand keep their media."""
        await super().stop_accepting()
        await self.reporter.beat()

    async def wait_idle(self) -> None:
        await self.registry.wait_idle()
        await self.in_flight.wait_idle()

    async def close(self) -> None:
        for task in getattr(self, "_tasks", []):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if hasattr(self, "registry"):
            await self.registry.close_all("node_draining")
            await self.reporter.beat()
            await self.reporter.stop()
            await self.events.stop()
            self._executor.shutdown(wait=False, cancel_futures=True)

    def load_extra(self) -> dict[str, float]:
        if not hasattr(self, "registry"):
            return {}
        snapshot = self.reporter.snapshot(cpu=False)
        return {
            "calls": float(snapshot.calls),
            "participants": float(snapshot.participants),
            "forwarded_streams": float(snapshot.forwarded_streams),
            "packets_forwarded": float(snapshot.packets_forwarded_total),
            "tap_dropped": float(snapshot.tap_dropped_total),
        }
