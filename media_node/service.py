"""The media node service process: wires the SFU parts to the bus and the runtime."""

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from media_node import passthrough
from media_node.calls import SessionRegistry
from media_node.forwarder import ForwardingStats
from media_node.placement_report import PlacementReporter
from media_node.rpc import MediaRpc
from media_node.session import NodeContext
from media_node.settings import MediaNodeSettings
from media_node.speaker import SpeakerChange
from media_node.tap import TapStats, UtteranceCutter
from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import ActiveSpeakerChanged
from schemas.logs import get_logger
from schemas.media import AudioChunk
from schemas.runtime import Service

log = get_logger("media_node")


class MediaNodeService(Service[MediaNodeSettings]):
    """An SFU: sessions over NATS RPC, passthrough forwarding, speaker events, audio tap."""

    kind = "media_node"

    async def start(self, bus: Bus) -> None:
        settings = self.settings
        passthrough.install()
        self.bus = bus
        self.forwarding = ForwardingStats()
        self.taps = TapStats()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.media_node_tap_threads, thread_name_prefix="audio-tap"
        )

        async def publish_chunk(chunk: AudioChunk) -> None:
            await bus.publish(subjects.audio_chunk(chunk.call_id, chunk.participant_id), chunk)

        node = NodeContext(
            node_id=self.service_id,
            forwarding=self.forwarding,
            taps=self.taps,
            executor=self._executor,
            publish_chunk=publish_chunk,
            vad=settings.media_node_vad,
            keyframe_interval_s=settings.media_node_keyframe_interval_s,
            max_hole_s=settings.media_node_max_hole_s,
            video_queue_frames=settings.media_node_video_queue_frames,
            tap_queue_packets=settings.media_node_tap_queue_packets,
            new_cutter=UtteranceCutter.factory(settings),
            public_ip=settings.media_node_public_ip,
            stun_urls=tuple(
                url.strip() for url in settings.media_node_stun_urls.split(",") if url.strip()
            ),
        )
        self.registry = SessionRegistry(node, capacity=settings.media_node_max_participants)
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
            forwarding=self.forwarding,
            taps=self.taps,
            interval_s=settings.media_node_report_interval_s,
            draining=lambda: not self.accepting,
        )
        self.reporter.start()
        self._speaker_task = asyncio.get_running_loop().create_task(
            self._speaker_loop(), name="active-speaker"
        )
        log.info("media_node.serving", node_id=self.service_id)

    async def _speaker_loop(self) -> None:
        interval = self.settings.media_node_speaker_interval_s
        while True:
            await asyncio.sleep(interval)
            for room in list(self.registry.rooms.values()):
                try:
                    change = room.speaker.evaluate()
                except Exception as exc:  # one call's bad state must not end every call's
                    log.exception(
                        "speaker.evaluate_failed", call_id=room.call_id, error=type(exc).__name__
                    )
                    continue
                if change is not None:
                    await self._publish_speaker(room.call_id, change)

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
        if hasattr(self, "_speaker_task"):
            self._speaker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._speaker_task
        if hasattr(self, "registry"):
            await self.registry.close_all()
            await self.reporter.beat()
            await self.reporter.stop()
            self._executor.shutdown(wait=False, cancel_futures=True)

    def load_extra(self) -> dict[str, float]:
        if not hasattr(self, "registry"):
            return {}
        return {
            "calls": float(len(self.registry.rooms)),
            "participants": float(self.registry.participants),
            "forwarded_streams": float(self.registry.forwarded_streams),
            "frames_forwarded": float(self.forwarding.frames_forwarded),
            "tap_dropped": float(self.taps.packets_dropped),
        }
