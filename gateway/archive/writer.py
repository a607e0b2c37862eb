"""What the archive does with each message: log it, fold its call, write what changed.

Every step is idempotent, so the bus may deliver a message twice, or after a crash between
two steps: the event log is keyed by event id, the fold is a pure function of the log, and
documents are written only over older versions. A message is acknowledged (by the bus
helper) only after its writes returned; while MongoDB is unreachable the writer keeps the
message in hand (telling JetStream it is still working on it) instead of burning delivery
attempts, so an outage delays the archive but loses nothing.
"""

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import msgspec
from pymongo.errors import ConnectionFailure, PyMongoError

from gateway.archive.call_cache import CallCache
from gateway.archive.documents import CaptionRecord, TranscriptionRecord, Versioned
from gateway.archive.projection import Folded, LoggedCallEvent, Sequenced, epoch_ms, fold
from gateway.archive.repository import ArchiveRepository, LogCount
from schemas import metrics
from schemas.bus import Incoming
from schemas.call_events import (
    CallEnded,
    CallEventEnvelope,
    CallInitiated,
    CallModeChanged,
    CallStatusChanged,
    ParticipantJoined,
)
from schemas.captions import Caption, TranscriptSegment
from schemas.logs import get_logger

log = get_logger("gateway.archive")

T = TypeVar("T")

EVENTS = metrics.counter(
    "archive_events_total", "Call events the archive received, new or already logged.", ("outcome",)
)
WRITES = metrics.counter("archive_documents_written_total", "Documents written.", ("collection",))
PENDING = metrics.gauge(
    "archive_pending_events", "Events waiting for a missing revision of their call."
)
SKIPPED = metrics.counter(
    "archive_revisions_skipped_total",
    "Missing revisions the fold stopped waiting for (the call ended, or the gap deadline).",
)
UNKNOWN = metrics.counter(
    "archive_events_not_understood_total",
    "Call events of a type (or version) this archive cannot decode, logged as no-op revisions.",
    ("type",),
)
WRITE_SECONDS = metrics.histogram(
    "archive_write_seconds", "Time to log, fold and write one batch of call events."
)
LOGS_READ = metrics.counter(
    "archive_call_logs_total",
    "Call logs a batch needed: known from the writer's memory, or read back from MongoDB.",
    ("source",),
)
BATCH_EVENTS = metrics.histogram(
    "archive_batch_events",
    "Call events per batch the archive wrote together.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
CALLS_STARTED = metrics.counter("calls_started_total", "Calls initiated.", ("conversation_type",))
CALLS_ENDED = metrics.counter("calls_ended_total", "Calls ended, by reason.", ("reason",))
CALL_DURATION = metrics.histogram(
    "call_duration_seconds", "Duration of ended calls.", buckets=metrics.DURATION_BUCKETS
)
CALL_SETUP = metrics.histogram(
    "call_setup_seconds", "From initiation to the call becoming active (someone answered)."
)
PARTICIPANTS_JOINED = metrics.counter(
    "participants_joined_total", "Participants who joined a call.", ("kind",)
)
MODE_SWITCH = metrics.histogram(
    "mode_switch_duration_seconds",
    "Migrations between P2P and SFU: decision to last acknowledgement (or failure).",
    ("to_mode", "outcome"),
)
TRANSCRIPT_LATENCY = metrics.histogram(
    "transcription_latency_seconds",
    "End of speech to the final transcript segment being produced.",
    ("source",),
)
CAPTION_LATENCY = metrics.histogram(
    "caption_latency_seconds",
    "End of speech to the final caption being produced, translated or not.",
    ("translated",),
)
TRANSLATION_TIME = metrics.histogram(
    "translation_duration_seconds", "Time the translator took for one caption."
)

#: Logged events remembered by default (``ARCHIVE_CACHE_EVENTS``).
CACHE_EVENTS = 100_000
#: Event ids logged but not yet counted (their batch failed after logging them) kept at
#: most; past it the oldest would count as redeliveries.
UNOBSERVED_MAX = 8192


class ArchiveWriter:
    """Handlers for the archive's three durable consumers."""

    def __init__(
        self,
        repo: ArchiveRepository,
        *,
        accepting: Callable[[], bool],
        gap_deadline_s: float | None = None,
        cache_events: int = CACHE_EVENTS,
    ) -> None:
        self.repo = repo
        self.gap_deadline_s = gap_deadline_s
        self._accepting = accepting
        self._cache = CallCache(max_events=cache_events)
        self._pending: dict[str, int] = {}
        self._unobserved: OrderedDict[str, None] = OrderedDict()
        self._skipped: dict[str, list[int]] = {}
        self.events_logged = 0
        self.duplicates = 0
        #: Call logs a batch took from memory, and read back from MongoDB.
        self.logs_known = 0
        self.logs_read = 0

    async def _retrying(self, what: Callable[[], Awaitable[T]], msgs: Sequence[Incoming]) -> T:
        """Run a MongoDB step; while the server is unreachable or timing out (a stalled
        server, ``MONGO_TIMEOUT_S``), keep the messages in hand."""
        delay = 0.2
        warned = False
        while True:
            try:
                return await what()
            except PyMongoError as exc:
                if not (isinstance(exc, ConnectionFailure) or exc.timeout):
                    raise
                if not self._accepting():
                    raise  # draining: let JetStream redeliver them to whoever runs next
                if not warned:
                    log.warning("archive.mongo_unavailable", error=type(exc).__name__)
                    warned = True
                for msg in msgs:
                    await msg.in_progress()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def folded_count(self, call_id: str) -> int:
        """How many events of a call this writer last folded and wrote (0: none lately)."""
        known = self._cache.get(call_id)
        return len(known.ids) if known is not None else 0

    # --- call events --------------------------------------------------------------------
    async def on_event(self, event: LoggedCallEvent, msg: Incoming) -> None:
        """One event (the bus helper's per-message path: a redelivery, or a batch that
        failed and is retried message by message)."""
        await self.on_events([(event, msg)])

    async def on_events(self, batch: Sequence[tuple[LoggedCallEvent, Incoming]]) -> None:
        """A batch of events, in stream order, in a handful of round trips whatever its
        size: log them all, count each call's logged events (its log is then known from
        memory when the count says nobody else logged any; else it is read back, every such
        call in one query), fold each call once, and write every changed document with one
        bulk write per collection."""
        if not batch:
            return
        msgs = [msg for _, msg in batch]
        with WRITE_SECONDS.time():
            # The stream's clock, not ours: a replay folds exactly as the first pass did.
            rows = [
                (event, int(msg.metadata.sequence.stream), msg.data, msg.metadata.timestamp)
                for event, msg in batch
            ]
            logged = await self._retrying(lambda: self.repo.log_events(rows), msgs)
            # Logged here but not yet counted: if what follows fails, the retry finds these
            # "already logged", and must still count and observe them once.
            for event_id in logged:
                self._unobserved[event_id] = None
            while len(self._unobserved) > UNOBSERVED_MAX:
                self._unobserved.popitem(last=False)
            # call id -> the stream time of its latest event in the batch
            calls: dict[str, datetime] = {}
            for event, msg in batch:
                calls[event.call_id] = msg.metadata.timestamp
            logs = await self._logs(rows, logged, calls, msgs)
            writes: list[list[tuple[str, str, Versioned]]] = []
            remember: list[tuple[str, list[Sequenced], list[tuple[str, str, Versioned]]]] = []
            created: dict[str, datetime | None] = {}
            for call_id, stored_at in calls.items():
                call_log = logs.get(call_id, [])
                folded = fold(call_log, now=stored_at, gap_deadline_s=self.gap_deadline_s)
                self._note_gaps(call_id, folded)
                created[call_id] = folded.session.created_at if folded.session else None
                docs = ArchiveRepository.documents(folded)
                writes.append(self._changed(call_id, docs))
                remember.append((call_id, call_log, docs))
            PENDING.set(sum(self._pending.values()))
            written = await self._retrying(lambda: self.repo.write_calls(writes), msgs)
            for collection, count in written.items():
                WRITES.labels(collection=collection).inc(count)
            for call_id, call_log, docs in remember:
                self._cache.put(
                    call_id, call_log, {f"{c}/{i}": msgspec.json.encode(d) for c, i, d in docs}
                )
        BATCH_EVENTS.observe(len(batch))
        for event, _ in batch:
            self._count(event, created.get(event.call_id))

    async def _logs(
        self,
        rows: Sequence[tuple[LoggedCallEvent, int, bytes, datetime | None]],
        logged: set[str],
        calls: dict[str, datetime],
        msgs: Sequence[Incoming],
    ) -> dict[str, list[Sequenced]]:
        """The whole log of each call of the batch: from memory where the count of its
        logged events proves it complete, else read back (one query for all of those)."""
        ids = list(calls)
        if not any(self._cache.get(c) is not None for c in ids):
            return await self._read_logs(ids, msgs)
        mine: dict[str, list[Sequenced]] = {}
        redelivered: dict[str, set[str]] = {}
        taken: set[str] = set()
        for row in rows:
            event = row[0]
            if event.event_id in taken:
                continue  # a second copy in the batch: the insert kept the first
            if event.event_id in logged:
                taken.add(event.event_id)
                mine.setdefault(event.call_id, []).append(ArchiveRepository.as_read_back(row))
            else:
                redelivered.setdefault(event.call_id, set()).add(event.event_id)
        counts = await self._retrying(lambda: self.repo.log_counts(ids), msgs)
        logs: dict[str, list[Sequenced]] = {}
        unknown: list[str] = []
        for call_id in ids:
            known = self._cache.extended(
                call_id,
                mine.get(call_id, ()),
                redelivered.get(call_id, ()),
                counts.get(call_id, LogCount(0, 0)),
            )
            if known is None:
                unknown.append(call_id)
            else:
                logs[call_id] = known
        self.logs_known += len(logs)
        LOGS_READ.labels(source="memory").inc(len(logs))
        if unknown:
            logs.update(await self._read_logs(unknown, msgs))
        return logs

    async def _read_logs(
        self, call_ids: list[str], msgs: Sequence[Incoming]
    ) -> dict[str, list[Sequenced]]:
        self.logs_read += len(call_ids)
        LOGS_READ.labels(source="read").inc(len(call_ids))
        return await self._retrying(lambda: self.repo.call_logs(call_ids), msgs)

    def _count(self, event: LoggedCallEvent, created_at: datetime | None) -> None:
        """Count an event written, once: new if this writer logged it and has not counted
        it yet (even if the batch that logged it failed afterwards), else a redelivery."""
        new = self._unobserved.pop(event.event_id, False) is None
        EVENTS.labels(outcome="new" if new else "duplicate").inc()
        if not new:
            self.duplicates += 1
            return
        self.events_logged += 1
        self._observe(event, created_at)
        if isinstance(event, CallEventEnvelope):
            UNKNOWN.labels(type=event.type[:64]).inc()
            log.warning(
                "archive.event_not_understood",
                call_id=event.call_id,
                event_type=event.type,
                seq=event.seq,
            )

    def _note_gaps(self, call_id: str, folded: Folded) -> None:
        """Track the call's events waiting for a missing revision, and say once which
        revisions were skipped."""
        self._pending[call_id] = folded.pending
        if folded.pending == 0:
            self._pending.pop(call_id, None)
        if folded.skipped and self._skipped.get(call_id) != folded.skipped:
            log.warning(
                "archive.revisions_skipped",
                call_id=call_id,
                missing=folded.skipped,
                pending=folded.pending,
            )
            SKIPPED.inc(len(folded.skipped))
        if folded.skipped:
            self._skipped[call_id] = folded.skipped
        else:
            self._skipped.pop(call_id, None)

    def _changed(
        self, call_id: str, docs: list[tuple[str, str, Versioned]]
    ) -> list[tuple[str, str, Versioned]]:
        """The documents to write: those not exactly as this writer last wrote them.

        A document carries the version of the last event that changed it, so bytes equal
        to a write already made (version included) are a document no event since has
        touched: the stored one is that write, or a newer one from another instance.
        """
        known = self._cache.get(call_id)
        if known is None:
            return docs  # first sight, or a restart
        before = known.written
        return [d for d in docs if before.get(f"{d[0]}/{d[1]}") != msgspec.json.encode(d[2])]

    @staticmethod
    def _observe(event: LoggedCallEvent, created_at: datetime | None) -> None:
        """Business metrics, once per event (never on a redelivery)."""
        match event:
            case CallInitiated():
                CALLS_STARTED.labels(conversation_type=event.conversation_type).inc()
            case CallEnded():
                CALLS_ENDED.labels(reason=event.reason).inc()
                CALL_DURATION.observe(event.duration_s)
            case ParticipantJoined():
                PARTICIPANTS_JOINED.labels(kind=event.participant.kind).inc()
            case CallModeChanged():
                MODE_SWITCH.labels(to_mode=event.to_mode, outcome=event.outcome).observe(
                    event.duration_ms / 1000.0
                )
            case CallStatusChanged(to_status="active", from_status="ringing"):
                if created_at is not None:
                    setup = (event.occurred_at - created_at).total_seconds()
                    CALL_SETUP.observe(max(0.0, setup))
            case _:
                pass

    # --- transcripts --------------------------------------------------------------------
    async def on_segment(self, segment: TranscriptSegment, msg: Incoming) -> None:
        if not segment.is_final:
            return  # partials are replaced by their final; only finals are archived
        record = TranscriptionRecord(
            call_id=segment.call_id,
            utterance_id=segment.utterance_id,
            participant_id=segment.participant_id,
            language=segment.language,
            text=segment.text,
            revision=segment.revision,
            start_s=segment.start_s,
            end_s=segment.end_s,
            confidence=segment.confidence,
            source=segment.source,
            model=segment.model,
            speech_ended_at=segment.speech_ended_at,
            spoken_ms=epoch_ms(segment.speech_ended_at),
            produced_at=segment.produced_at,
        )
        if await self._retrying(lambda: self.repo.put_transcription(record), [msg]):
            WRITES.labels(collection="transcriptions").inc()
            latency = (segment.produced_at - segment.speech_ended_at).total_seconds()
            TRANSCRIPT_LATENCY.labels(source=segment.source).observe(max(0.0, latency))

    async def on_caption(self, caption: Caption, msg: Incoming) -> None:
        if not caption.is_final:
            return
        record = CaptionRecord(
            call_id=caption.call_id,
            utterance_id=caption.utterance_id,
            language=caption.language,
            text=caption.text,
            revision=caption.revision,
            translated=caption.translated,
            untranslated_reason=caption.untranslated_reason,
            source_language=caption.source_language,
            speaker_participant_id=caption.speaker_participant_id,
            produced_at=caption.produced_at,
        )
        if await self._retrying(lambda: self.repo.put_caption(record), [msg]):
            WRITES.labels(collection="captions").inc()
            latency = (caption.produced_at - caption.speech_ended_at).total_seconds()
            CAPTION_LATENCY.labels(translated=str(caption.translated).lower()).observe(
                max(0.0, latency)
            )
            if caption.translated:
                TRANSLATION_TIME.observe(caption.translation_ms / 1000.0)
