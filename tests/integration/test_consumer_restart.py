"""Pull consumers come back by themselves when the bus lost them.

A whole-bus restart empties the memory stream ``AUDIO_CHUNKS`` and its consumer with it
(the stream is re-provisioned on reconnect); a pull then gets "no responders". The
transcriber worker (and ``Bus.consume``, which the archive and the selector use)
re-creates its consumer with the same config and carries on. The worker runs here in
process, as the ``transcriber`` role, with a stand-in engine: what is under test is the
pull loop, not the speech model.
"""

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import msgspec
import nats.js.errors
from nats.aio.msg import Msg

from schemas import permissions, subjects
from schemas.bus import Bus
from schemas.captions import TranscriptSegment
from schemas.codec import encode
from schemas.media import AudioChunk
from schemas.provisioning import provision
from schemas.settings import BusSettings
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector, eventually
from transcriber.engine import SpeechToText, SttCapabilities, SttRequest, SttResult
from transcriber.worker import TranscriberWorker, WorkerConfig


class _EchoEngine(SpeechToText):
    """Says "heard" for every utterance: instant, deterministic."""

    name = "echo"

    def __init__(self) -> None:
        self.capabilities = SttCapabilities(languages=frozenset({"en"}), batching=True)

    def load(self) -> None:
        pass

    def transcribe(self, requests: Sequence[SttRequest]) -> list[SttResult]:
        return [SttResult("heard", 0.9, 0.0, self.name) for _ in requests]


def _chunk(call_id: str, utterance_id: str) -> AudioChunk:
    return AudioChunk(
        call_id=call_id,
        participant_id="p-alice",
        utterance_id=utterance_id,
        sequence=0,
        is_final=True,
        start_s=0.0,
        end_s=1.0,
        started_at=datetime.now(UTC),
        pcm=b"\x10\x00" * 16000,
    )


async def test_a_transcriber_transcribes_again_after_a_whole_bus_restart(uid: str) -> None:
    server = NatsServer(name="restart").start()
    admin_settings = BusSettings(nats_url=server.url, nats_connect_deadline_s=10)
    user, password = server.credentials(permissions.TRANSCRIBER.name)
    settings = BusSettings(
        nats_url=server.url, nats_user=user, nats_password=password, nats_connect_deadline_s=10
    )
    admin = await Bus.connect(admin_settings, "test-admin")
    bus = await Bus.connect(settings, "test-transcriber")
    executor = ThreadPoolExecutor(1)
    worker = TranscriberWorker(
        bus=bus,
        engine=_EchoEngine(),
        executor=executor,
        config=WorkerConfig(durable=subjects.TRANSCRIBER_DURABLE),
        service_id=f"t-{uid}",
    )
    try:
        await provision(admin.js, admin_settings)
        # As the service does: provision its own streams again after every reconnect.
        bus.on_reconnect(lambda: provision(bus.js, settings, permissions.TRANSCRIBER))
        admin.on_reconnect(lambda: provision(admin.js, admin_settings))
        segments: Collector[TranscriptSegment] = Collector()

        async def on_segment(msg: Msg) -> None:
            await segments(msgspec.json.decode(msg.data, type=TranscriptSegment), msg)

        await admin.nc.subscribe(subjects.transcript_segment(uid), cb=on_segment)
        await worker.start()
        await admin.js.publish(subjects.audio_chunk(uid, "p-alice"), encode(_chunk(uid, "before")))
        await segments.wait(lambda got: _heard(got, "before"), 20)

        server.kill()
        server.start()
        # Back: the stream re-provisioned (empty, without its consumer) by the hooks.
        await eventually(lambda: _has_stream(admin), 30, step=0.1)

        await admin.js.publish(subjects.audio_chunk(uid, "p-alice"), encode(_chunk(uid, "after")))
        await segments.wait(lambda got: _heard(got, "after"), 30)
        assert server.violations() == []
    finally:
        await worker.stop()
        executor.shutdown(wait=False)
        await bus.close()
        await admin.close()
        server.cleanup()


def _heard(segments: list[TranscriptSegment], utterance_id: str) -> bool:
    return any(s.utterance_id == utterance_id and s.text == "heard" for s in segments)


async def _has_stream(admin: Bus) -> bool:
    if not admin.nc.is_connected:
        return False
    try:
        await admin.js.stream_info(subjects.AUDIO_CHUNKS_STREAM)
    except Exception:
        return False
    return True


async def test_bus_consume_recreates_a_consumer_that_vanished(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    """``Bus.consume`` (the archive's, the selector's loop): its durable deleted under it
    (what a restart does to a memory stream's consumers), it comes back and delivers."""
    got: Collector[TranscriptSegment] = Collector()
    durable = f"restart-{uid}"
    consumer = await bus.consume(
        stream=subjects.TRANSCRIPTS_STREAM,
        durable=durable,
        filter_subject=subjects.transcript_segment(uid),
        type_=TranscriptSegment,
        handler=got,
    )
    try:
        await bus.js.delete_consumer(subjects.TRANSCRIPTS_STREAM, durable)
        segment = TranscriptSegment(
            call_id=uid,
            participant_id="p-alice",
            utterance_id="after",
            language="en",
            text="heard",
            is_final=True,
        )
        await bus.js.publish(subjects.transcript_segment(uid), encode(segment))
        await got.wait(lambda seen: _heard(seen, "after"), 20)
        assert (await bus.js.consumer_info(subjects.TRANSCRIPTS_STREAM, durable)).name == durable
    finally:
        await consumer.stop()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await bus.js.delete_consumer(subjects.TRANSCRIPTS_STREAM, durable)
