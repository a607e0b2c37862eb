"""The transcription loop: pull chunks when free, transcribe off the loop, publish, ack.

Chunks wait in the JetStream work-queue stream ``AUDIO_CHUNKS`` (it stores the media
node's plain publishes on ``audio.chunk.>``) and every transcriber pulls from one shared
durable consumer. A worker pulls only when its engine is free: one chunk with a long poll,
then whatever else is already waiting (up to the batch size), so an idle worker is never
starved by a busy one holding a backlog. A chunk is acknowledged after its segment is
published; a worker that dies leaves its chunks unacknowledged and JetStream offers them
to another worker after ``ack_wait`` (delivery is at least once: a worker dying between
publishing and acknowledging makes a duplicate segment, same utterance id and revision).
A chunk no worker survives is dead-lettered once it runs out of deliveries
(:mod:`transcriber.exhausted`).

Bad chunks (undecodable, wrong rate, empty) are parked on
``dlq.audio.chunk.<call>.<participant>`` with the reason and acknowledged at once: they
never block or crash the worker. A chunk in a language this worker has no model for is not
bad: another host may have that model (``TRANSCRIBER_MODELS`` differs per host), so it is
handed back (``nak`` with a short delay) for another worker to take, and dead-lettered
(``unsupported_language``) only on its last delivery (``max_deliver``).
"""

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind

from schemas import subjects, telemetry
from schemas.bus import CONSUMER_GONE, Bus, continue_trace
from schemas.captions import TranscriptSegment
from schemas.codec import decoder_for, encode
from schemas.dead_letter import DeadLetter, FailureKind
from schemas.logs import get_logger
from schemas.media import AudioChunk
from schemas.message import utc_now
from schemas.runtime import InFlight
from transcriber.engine import (
    SpeechToText,
    SttError,
    SttRequest,
    SttResult,
    UnsupportedLanguage,
)
from transcriber.exhausted import ExhaustedChunks
from transcriber.jobs import (
    Job,
    Progress,
    coalesce,
    segment_for,
    to_request,
    worth_publishing,
)

log = get_logger("transcriber.worker")

#: How long one pull waits for a chunk before checking whether to stop.
_POLL_S = 1.0
#: The second pull of a batch only takes what is already waiting.
_GRAB_S = 0.05


@dataclass(slots=True)
class WorkerStats:
    """Counters and gauges for the heartbeat."""

    chunks_received: int = 0
    chunks_transcribed: int = 0
    chunks_superseded: int = 0
    chunks_rejected: int = 0
    #: Chunks handed back for another worker (a language this one has no model for).
    chunks_deferred: int = 0
    chunks_failed: int = 0
    segments_published: int = 0
    batches: int = 0
    audio_s_total: float = 0.0
    busy_s_total: float = 0.0
    #: Real-time factor of recent batches (transcription time / audio time), smoothed.
    rtf_recent: float = 0.0
    #: Chunks waiting in the stream for any worker (refreshed every few seconds).
    queue_depth: int = 0
    in_hand: int = 0
    last_batch_size: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def count_rejected(self, reason: str) -> None:
        self.chunks_rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1

    def record_batch(self, audio_s: float, busy_s: float, size: int) -> None:
        self.batches += 1
        self.audio_s_total += audio_s
        self.busy_s_total += busy_s
        self.last_batch_size = size
        rtf = busy_s / audio_s if audio_s > 0 else 0.0
        self.rtf_recent = rtf if self.batches == 1 else 0.8 * self.rtf_recent + 0.2 * rtf

    def as_gauges(self) -> dict[str, float]:
        rtf_total = self.busy_s_total / self.audio_s_total if self.audio_s_total else 0.0
        gauges = {
            "queue_depth": float(self.queue_depth),
            "in_hand": float(self.in_hand),
            "rtf": round(self.rtf_recent, 4),
            "rtf_total": round(rtf_total, 4),
            "audio_s_total": round(self.audio_s_total, 3),
            "busy_s_total": round(self.busy_s_total, 3),
            "chunks_received": float(self.chunks_received),
            "chunks_transcribed": float(self.chunks_transcribed),
            "chunks_superseded": float(self.chunks_superseded),
            "chunks_rejected": float(self.chunks_rejected),
            "chunks_deferred": float(self.chunks_deferred),
            "chunks_failed": float(self.chunks_failed),
            "segments_published": float(self.segments_published),
            "batches": float(self.batches),
            "last_batch_size": float(self.last_batch_size),
        }
        for reason, count in self.rejected_by_reason.items():
            gauges[f"rejected_{reason}"] = float(count)
        return gauges


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    durable: str
    batch_size: int = 4
    ack_wait_s: float = 5.0
    max_deliver: int = 3
    #: How long a chunk handed back for another worker waits before it is offered again.
    defer_s: float = 0.5
    #: How long :meth:`TranscriberWorker.stop` waits for the batch in hand before it gives
    #: up on it (unacknowledged, it is redelivered to another worker after ``ack_wait_s``).
    stop_timeout_s: float = 20.0


def consumer_config(config: WorkerConfig) -> ConsumerConfig:
    """The shared durable consumer every transcriber instance pulls from."""
    return ConsumerConfig(
        durable_name=config.durable,
        description="Transcribers: audio chunks to transcribe (shared by every instance).",
        filter_subject=subjects.ALL_AUDIO_CHUNKS,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=config.ack_wait_s,
        max_deliver=config.max_deliver,
        # Shared by all instances; each instance bounds itself to one batch in hand.
        max_ack_pending=10_000,
    )


class TranscriberWorker:
    """One instance's loop (see the module docstring)."""

    def __init__(
        self,
        *,
        bus: Bus,
        engine: SpeechToText,
        executor: Executor,
        config: WorkerConfig,
        service_id: str,
        in_flight: InFlight | None = None,
    ) -> None:
        self.bus = bus
        self.engine = engine
        self.executor = executor
        self.config = config
        self.service_id = service_id
        self.stats = WorkerStats()
        self._in_flight = in_flight or InFlight()
        self._progress = Progress()
        #: stop() gave up on a batch whose engine call is still running in its thread.
        self.abandoned_batch = False
        self._decoder: msgspec.json.Decoder[AudioChunk] = decoder_for(AudioChunk)
        self._psub: Any = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._depth_task: asyncio.Task[None] | None = None
        self._exhausted = ExhaustedChunks(
            bus=bus,
            durable=config.durable,
            service_id=service_id,
            on_dead_letter=lambda: self.stats.count_rejected("delivery_exhausted"),
        )

    async def start(self) -> None:
        await self._exhausted.start()
        await self._subscribe()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="transcriber-worker")
        self._depth_task = loop.create_task(self._watch_depth(), name="queue-depth")

    async def stop(self) -> None:
        """Stop pulling; the batch in hand is finished and acknowledged first, within
        ``stop_timeout_s`` (past it the batch is abandoned to redelivery, never lost)."""
        self._stopping.set()
        if self._depth_task is not None:
            self._depth_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._depth_task
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=self.config.stop_timeout_s)
            if not done:
                log.warning(
                    "worker.stop_deadline",
                    in_hand=self.stats.in_hand,
                    deadline_s=self.config.stop_timeout_s,
                )
                # The engine's thread cannot be cancelled; the process exits without it.
                self.abandoned_batch = True
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
        await self._exhausted.stop()

    async def _subscribe(self) -> None:
        """Bind to the shared consumer, creating it (this config) if it is missing."""
        self._psub = await self.bus.js.pull_subscribe(
            subjects.ALL_AUDIO_CHUNKS,
            durable=self.config.durable,
            stream=subjects.AUDIO_CHUNKS_STREAM,
            config=consumer_config(self.config),
        )

    async def _resubscribe(self) -> bool:
        """After the consumer was lost (a whole-bus restart empties the memory stream
        ``AUDIO_CHUNKS``, its consumer with it): the same consumer again, same config."""
        with contextlib.suppress(Exception):
            await self._psub.unsubscribe()
        try:
            await self._subscribe()
        except Exception as exc:
            log.warning("worker.resubscribe_failed", error=type(exc).__name__)
            return False
        log.info("worker.resubscribed", durable=self.config.durable)
        return True

    # --- the loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        gone = False
        while not self._stopping.is_set():
            if gone:
                if not await self._resubscribe():
                    await asyncio.sleep(0.5)
                    continue
                gone = False
            try:
                messages = await self._pull()
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return
            except CONSUMER_GONE as exc:
                log.warning("worker.consumer_gone", error=type(exc).__name__)
                gone = True
                continue
            except Exception as exc:
                log.warning("worker.pull_failed", error=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            if not messages:
                continue
            self.stats.in_hand = len(messages)
            try:
                with self._in_flight:  # draining waits for the batch in hand
                    await self._handle(messages)
            except Exception as exc:  # never let one batch stop the worker
                log.exception("worker.batch_failed", error=type(exc).__name__)
            finally:
                self.stats.in_hand = 0

    async def _pull(self) -> list[Msg]:
        try:
            first: list[Msg] = await self._psub.fetch(1, timeout=_POLL_S)
        except TimeoutError:
            return []
        # The first chunk says how many more wait; grab them only if there are any (a
        # pull that finds none would wait out its timeout).
        waiting = int(first[0].metadata.num_pending or 0) if first else 0
        wanted = min(self.config.batch_size - 1, waiting)
        if wanted <= 0:
            return first
        try:
            more: list[Msg] = await self._psub.fetch(wanted, timeout=_GRAB_S)
        except TimeoutError:
            more = []
        return first + more

    async def _handle(self, messages: list[Msg]) -> None:
        self.stats.chunks_received += len(messages)
        jobs: list[Job[Msg]] = []
        for msg in messages:
            job = await self._job(msg)
            if job is not None:
                jobs.append(job)
        keep, superseded = coalesce(jobs)
        stale = [j for j in keep if self._progress.is_stale(j)]
        keep = [j for j in keep if not self._progress.is_stale(j)]
        for job in (*superseded, *stale):
            self.stats.chunks_superseded += 1
            await job.message.ack()
        if keep:
            await self._transcribe(keep)

    async def _job(self, msg: Msg) -> Job[Msg] | None:
        """Decode and check one chunk; a bad one is dead-lettered and acknowledged."""
        try:
            chunk: AudioChunk = self._decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self._reject(msg, "decode", "undecodable", str(exc))
            return None
        attempts = msg.metadata.num_delivered
        try:
            request = to_request(chunk)
            self.engine.check(request)
        except UnsupportedLanguage as exc:
            if attempts < self.config.max_deliver:
                await self._defer(msg, chunk, attempts)
            else:
                reason = f"{exc} on any worker that took it ({attempts} deliveries)"
                await self._reject(msg, "handler", exc.code, reason, chunk)
            return None
        except SttError as exc:
            await self._reject(msg, "handler", exc.code, str(exc), chunk)
            return None
        if attempts > 1:
            # Its first worker died or stalled past ack_wait before acknowledging it.
            log.info(
                "worker.redelivered",
                call_id=chunk.call_id,
                participant_id=chunk.participant_id,
                utterance_id=chunk.utterance_id,
                attempt=attempts,
            )
        return Job(chunk=chunk, request=request, message=msg, queued_at=_stored_at(msg))

    async def _defer(self, msg: Msg, chunk: AudioChunk, attempts: int) -> None:
        """Hand a chunk back for a worker that has its language's model."""
        self.stats.chunks_deferred += 1
        log.info(
            "worker.language_deferred",
            call_id=chunk.call_id,
            participant_id=chunk.participant_id,
            utterance_id=chunk.utterance_id,
            language=chunk.language,
            attempt=attempts,
        )
        await msg.nak(delay=self.config.defer_s)

    async def _transcribe(self, jobs: list[Job[Msg]]) -> None:
        loop = asyncio.get_running_loop()
        started_at = utc_now()
        started = time.perf_counter()
        requests: Sequence[SttRequest] = [j.request for j in jobs]
        work = loop.run_in_executor(self.executor, self.engine.transcribe, requests)
        keepalive = loop.create_task(self._keep_alive([j.message for j in jobs]))
        try:
            results: list[SttResult] = await work
        except Exception as exc:
            keepalive.cancel()
            if len(jobs) > 1:
                # One bad utterance fails the whole batch: find it by trying each alone,
                # so only the one that still fails is retried or dead-lettered.
                log.warning("worker.batch_failed", error=type(exc).__name__, size=len(jobs))
                await self._one_by_one(jobs)
                return
            if not isinstance(exc, SttError):
                log.exception("worker.engine_failed", error=type(exc).__name__, size=1)
            # check() passed the chunk, so this is the engine's own trouble: retry later.
            await self._retry(jobs, exc)
            return
        finally:
            keepalive.cancel()
        busy = time.perf_counter() - started
        audio_s = sum(j.request.seconds for j in jobs)
        self.stats.record_batch(audio_s, busy, len(jobs))
        for job, result in zip(jobs, results, strict=True):
            self._progress.record(job)
            self.stats.chunks_transcribed += 1
            if worth_publishing(job, result):
                segment = segment_for(
                    job, result, started_at=started_at, transcription_ms=busy * 1000
                )
                await self._publish(job, segment)
                self.stats.segments_published += 1
            await job.message.ack()
        log.debug("worker.batch_done", size=len(jobs), audio_s=round(audio_s, 2), busy_s=busy)

    async def _publish(self, job: Job[Msg], segment: TranscriptSegment) -> None:
        """Publish a segment in the trace its chunk came with (from the media node's audio
        tap), so one trace follows an utterance on to the bridge and the caption. Chunks of
        one batch may come from different utterances: each gets its own consumer span."""
        subject = subjects.transcript_segment(job.chunk.call_id)
        if telemetry.STATE.active:
            with continue_trace(job.message, "process", SpanKind.CONSUMER):
                await self.bus.publish(subject, segment)
        else:
            await self.bus.publish(subject, segment)

    async def _one_by_one(self, jobs: list[Job[Msg]]) -> None:
        """Transcribe the jobs of a failed batch one at a time (those waiting their turn
        are kept from being redelivered meanwhile)."""
        loop = asyncio.get_running_loop()
        waiting = loop.create_task(self._keep_alive([j.message for j in jobs]))
        try:
            for job in jobs:
                await self._transcribe([job])
        finally:
            waiting.cancel()

    async def _keep_alive(self, messages: list[Msg]) -> None:
        """Tell JetStream the batch is still being worked on (a long utterance on a slow
        host must not be redelivered to another worker meanwhile)."""
        while True:
            await asyncio.sleep(self.config.ack_wait_s / 2)
            for msg in messages:
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _retry(self, jobs: list[Job[Msg]], exc: Exception) -> None:
        for job in jobs:
            attempts = job.message.metadata.num_delivered
            if attempts >= self.config.max_deliver:
                await self._reject(
                    job.message, "handler", "engine_failed", type(exc).__name__, job.chunk
                )
            else:
                self.stats.chunks_failed += 1
                await job.message.nak(delay=min(0.2 * 2**attempts, 5.0))

    async def _reject(
        self,
        msg: Msg,
        failure: FailureKind,
        code: str,
        reason: str,
        chunk: AudioChunk | None = None,
    ) -> None:
        """Park a chunk as a dead letter (JetStream ``DEAD_LETTERS``) and acknowledge it."""
        self.stats.count_rejected(code)
        log.warning(
            "worker.chunk_rejected",
            subject=msg.subject,
            reason=code,
            detail=reason[:300],
            call_id=chunk.call_id if chunk else None,
            participant_id=chunk.participant_id if chunk else None,
        )
        letter = DeadLetter(
            original_subject=msg.subject,
            failure=failure,
            reason=f"{code}: {reason}"[:500],
            payload=bytes(msg.data),
            service_id=self.service_id,
            expected_type="AudioChunk",
            delivery_attempts=msg.metadata.num_delivered,
        )
        try:
            await self.bus.js.publish(subjects.dead_letter(msg.subject), encode(letter), timeout=2)
        except Exception as exc:
            log.error("worker.dead_letter_failed", error=type(exc).__name__)
        await msg.term()

    async def _watch_depth(self) -> None:
        """Keep ``queue_depth`` fresh for the heartbeat (chunks no worker has taken yet)."""
        while True:
            with contextlib.suppress(Exception):
                info = await self.bus.js.consumer_info(
                    subjects.AUDIO_CHUNKS_STREAM, self.config.durable
                )
                self.stats.queue_depth = int(info.num_pending or 0)
            await asyncio.sleep(1.0)


def _stored_at(msg: Msg) -> datetime:
    """When the stream stored the chunk (the media node's publish, give or take)."""
    try:
        stamp = msg.metadata.timestamp
    except Exception:
        return utc_now()
    if isinstance(stamp, datetime):
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return utc_now()
