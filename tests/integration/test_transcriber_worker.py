"""The transcriber's worker loop against a real NATS work queue, with test-double engines
(no models): what happens to a chunk a worker cannot transcribe, and to a batch that fails.

The module has a NATS server of its own: the ``AUDIO_CHUNKS`` work queue allows one shared
consumer, and other modules publish audio chunks that are not for these workers.
"""

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.captions import TranscriptSegment
from schemas.dead_letter import DeadLetter
from schemas.media import AudioChunk
from schemas.settings import BusSettings
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector, eventually
from transcriber.engine import (
    SpeechToText,
    SttCapabilities,
    SttError,
    SttRequest,
    SttResult,
)
from transcriber.worker import TranscriberWorker, WorkerConfig

#: Length (samples) of the audio the failing engine cannot take.
POISON_SAMPLES = 8000


class FakeEngine(SpeechToText):
    """Knows some languages; fails a whole batch holding a "poison" utterance."""

    def __init__(self, name: str, languages: set[str]) -> None:
        self.name = name
        self.capabilities = SttCapabilities(languages=frozenset(languages), batching=True)
        self.batches: list[list[int]] = []
        self._lock = threading.Lock()

    def load(self) -> None:
        pass

    def transcribe(self, requests: Sequence[SttRequest]) -> list[SttResult]:
        with self._lock:
            self.batches.append([len(r.audio) for r in requests])
        if any(len(r.audio) == POISON_SAMPLES for r in requests):
            raise SttError("the engine chokes on this utterance")
        return [SttResult(f"{self.name}:{r.language}", 0.9, 0.0, self.name) for r in requests]


def chunk(call_id: str, participant: str, language: str, samples: int = 16000) -> AudioChunk:
    return AudioChunk(
        call_id=call_id,
        participant_id=participant,
        utterance_id=f"u-{participant}",
        sequence=0,
        is_final=True,
        start_s=0.0,
        end_s=samples / 16000,
        started_at=datetime.now(UTC),
        speech_end_s=samples / 16000,
        language=language,
        pcm=(np.ones(samples, dtype="<i2") * 300).tobytes(),
    )


@pytest.fixture(scope="module")
def nats_here() -> Iterator[NatsServer]:
    server = NatsServer(name="transcriber-worker").start()
    yield server
    server.cleanup()


@pytest.fixture
def bus_settings(nats_here: NatsServer) -> BusSettings:
    return BusSettings(nats_url=nats_here.url, nats_connect_deadline_s=5)


@pytest.fixture
async def workers(bus: Bus) -> AsyncIterator[list[TranscriberWorker]]:
    """Workers started by a test (``start``), all stopped after it."""
    started: list[TranscriberWorker] = []
    yield started
    for worker in started:
        with contextlib.suppress(Exception):
            await worker.stop()


CONFIG = WorkerConfig(durable="transcribers", ack_wait_s=5.0, max_deliver=3, defer_s=0.1)


async def start(
    bus: Bus, engine: FakeEngine, started: list[TranscriberWorker], name: str
) -> TranscriberWorker:
    worker = TranscriberWorker(
        bus=bus,
        engine=engine,
        executor=ThreadPoolExecutor(1),
        config=CONFIG,
        service_id=name,
    )
    await worker.start()
    started.append(worker)
    return worker


async def store(bus: Bus, chunks: list[AudioChunk]) -> None:
    """Publish chunks and wait until the stream holds them (a batch forms from them)."""
    from schemas.codec import encode

    for c in chunks:
        await bus.js.publish(subjects.audio_chunk(c.call_id, c.participant_id), encode(c))


async def watch(
    bus: Bus, call_id: str
) -> tuple[Collector[TranscriptSegment], Collector[DeadLetter]]:
    segments: Collector[TranscriptSegment] = Collector()
    letters: Collector[DeadLetter] = Collector()
    await bus.subscribe(subjects.transcript_segment(call_id), TranscriptSegment, segments)
    await bus.subscribe(
        subjects.dead_letter(subjects.audio_chunks_of(call_id)), DeadLetter, letters
    )
    await bus.flush()
    return segments, letters


async def test_a_language_this_worker_lacks_is_left_for_a_worker_that_has_it(
    bus: Bus, workers: list[TranscriberWorker], uid: str
) -> None:
    call_id = f"c-{uid}"
    segments, letters = await watch(bus, call_id)
    await store(bus, [chunk(call_id, "chloe", "fr")])
    english_only = await start(bus, FakeEngine("tiny.en", {"en"}), workers, "tr-en")
    await eventually(lambda: english_only.stats.chunks_deferred >= 1, 10, step=0.02)
    await english_only.stop()
    # A host with the French model takes it: the utterance is not lost.
    french = await start(bus, FakeEngine("base", {"fr"}), workers, "tr-fr")
    await segments.wait_count(1, 10)
    assert segments.items[0].text == "base:fr" and segments.items[0].participant_id == "chloe"
    assert french.stats.chunks_transcribed == 1 and not letters.items
    assert english_only.stats.chunks_rejected == 0


async def test_a_language_no_worker_has_is_dead_lettered_on_its_last_delivery(
    bus: Bus, workers: list[TranscriberWorker], uid: str
) -> None:
    call_id = f"c-{uid}"
    _, letters = await watch(bus, call_id)
    worker = await start(bus, FakeEngine("tiny.en", {"en"}), workers, "tr-en")
    await store(bus, [chunk(call_id, "p", "eo")])
    await letters.wait_count(1, 10)
    letter = letters.items[0]
    assert letter.reason.startswith("unsupported_language")
    assert letter.delivery_attempts == CONFIG.max_deliver
    assert worker.stats.chunks_deferred == CONFIG.max_deliver - 1


async def test_one_failing_utterance_does_not_fail_the_others_in_its_batch(
    bus: Bus, workers: list[TranscriberWorker], uid: str
) -> None:
    call_id = f"c-{uid}"
    segments, letters = await watch(bus, call_id)
    engine = FakeEngine("base", {"en"})
    # Stored before the worker starts, so its first pull takes all three as one batch.
    await store(
        bus,
        [
            chunk(call_id, "alice", "en"),
            chunk(call_id, "bruno", "en", samples=POISON_SAMPLES),
            chunk(call_id, "chloe", "en"),
        ],
    )
    worker = await start(bus, engine, workers, "tr-a")
    await letters.wait_count(1, 10)
    await segments.wait_count(2, 10)
    assert engine.batches[0] == [16000, POISON_SAMPLES, 16000], "the batch did not form"
    assert {s.participant_id for s in segments.items} == {"alice", "chloe"}
    letter = letters.items[0]
    assert letter.reason.startswith("engine_failed")
    assert letter.delivery_attempts == CONFIG.max_deliver
    # Only the failing chunk was handed back for another try; the others on first delivery.
    assert worker.stats.chunks_failed == CONFIG.max_deliver - 1
    assert worker.stats.chunks_transcribed == 2


async def test_a_chunk_that_crashed_every_worker_is_dead_lettered_not_left_behind(
    bus: Bus, uid: str
) -> None:
    """Workers that die on a chunk never acknowledge it; after the last delivery the
    server's advisory makes a transcriber read it back and park it with its audio."""
    import nats.js.errors

    from transcriber.exhausted import ExhaustedChunks
    from transcriber.worker import consumer_config

    call_id = f"c-{uid}"
    _, letters = await watch(bus, call_id)
    config = WorkerConfig(durable="transcribers", ack_wait_s=0.3, max_deliver=2)
    stream = subjects.AUDIO_CHUNKS_STREAM
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await bus.js.delete_consumer(stream, config.durable)
    exhausted = ExhaustedChunks(bus=bus, durable=config.durable, service_id="tr-x")
    await exhausted.start()
    psub = await bus.js.pull_subscribe(
        subjects.ALL_AUDIO_CHUNKS,
        durable=config.durable,
        stream=stream,
        config=consumer_config(config),
    )
    try:
        poison = chunk(call_id, "p", "en")
        await store(bus, [poison])
        for attempt in (1, 2):  # each "worker" takes it and dies without acknowledging
            (taken,) = await psub.fetch(1, timeout=5)
            assert taken.metadata.num_delivered == attempt

        async def keep_pulling() -> None:
            # Workers keep pulling; the chunk is offered to nobody any more.
            while not letters.items:
                with contextlib.suppress(TimeoutError):
                    assert not await psub.fetch(1, timeout=0.5)

        await asyncio.wait_for(keep_pulling(), 10)
    finally:
        await exhausted.stop()
        await psub.unsubscribe()
        await bus.js.delete_consumer(stream, config.durable)
    letter = letters.items[0]
    assert letter.reason.startswith("delivery_exhausted") and letter.delivery_attempts == 2
    assert letter.original_subject == subjects.audio_chunk(call_id, "p")
    from schemas.codec import decoder_for

    assert decoder_for(AudioChunk).decode(letter.payload) == poison


class StuckEngine(FakeEngine):
    """Never finishes a batch until released (a wedged model, a host swapping)."""

    def __init__(self) -> None:
        super().__init__("stuck", {"en"})
        self.entered = threading.Event()
        self.release = threading.Event()

    def transcribe(self, requests: Sequence[SttRequest]) -> list[SttResult]:
        self.entered.set()
        self.release.wait(30)
        return super().transcribe(requests)


async def test_a_worker_stuck_in_a_batch_stops_by_its_deadline_and_the_chunk_is_not_lost(
    bus: Bus, workers: list[TranscriberWorker], uid: str
) -> None:
    call_id = f"c-{uid}"
    segments, _ = await watch(bus, call_id)
    engine = StuckEngine()
    stuck = TranscriberWorker(
        bus=bus,
        engine=engine,
        executor=ThreadPoolExecutor(1),
        config=WorkerConfig(durable="transcribers", ack_wait_s=2.0, stop_timeout_s=0.5),
        service_id="tr-stuck",
    )
    await stuck.start()
    try:
        await store(bus, [chunk(call_id, "dora", "en")])
        await eventually(engine.entered.is_set, 10)
        # stop() returns although the batch never ends (before the fix it waited forever).
        await asyncio.wait_for(stuck.stop(), 10)
        assert stuck.stats.chunks_transcribed == 0 and stuck.abandoned_batch
        # The chunk was never acknowledged: after ack_wait another worker transcribes it.
        await start(bus, FakeEngine("base", {"en"}), workers, "tr-b")
        await segments.wait_count(1, 15)
        assert segments.items[0].participant_id == "dora"
    finally:
        engine.release.set()
