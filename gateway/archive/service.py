"""The archive process: three durable JetStream consumers writing MongoDB.

- ``<durable>-events`` on ``CALL_EVENTS`` (``call.evt.>``): sessions, participants, history;
- ``<durable>-segments`` and ``<durable>-captions`` on ``TRANSCRIPTS``: final transcript
  segments and captions.

Durable consumers keep the archive's place in the stream: after a restart (or a crash) it
resumes with the first message it had not acknowledged, and a message is acknowledged only
once its documents are written. Instances sharing ``ARCHIVE_DURABLE`` share the work.
"""

import asyncio
import time

from gateway.archive.repository import ArchiveRepository
from gateway.archive.settings import ArchiveSettings
from gateway.archive.writer import ArchiveWriter
from schemas import subjects
from schemas.bus import Bus, Consumer
from schemas.call_events import AnyCallEvent, CallEventEnvelope
from schemas.captions import Caption, TranscriptSegment
from schemas.logs import get_logger
from schemas.runtime import Service

log = get_logger("gateway.archive")


class MongoUnavailable(RuntimeError):
    """MongoDB did not answer at start-up within ``MONGO_CONNECT_DEADLINE_S``."""


class ArchiveService(Service[ArchiveSettings]):
    kind = "archive"

    def __init__(self, settings: ArchiveSettings, service_id: str) -> None:
        super().__init__(settings, service_id)
        self.repo: ArchiveRepository | None = None
        self.writer: ArchiveWriter | None = None
        self.consumers: list[Consumer] = []

    async def _connect_mongo(self) -> ArchiveRepository:
        s = self.settings
        repo = ArchiveRepository.connect(s.mongo_url, s.mongo_database, timeout_s=s.mongo_timeout_s)
        deadline = time.monotonic() + s.mongo_connect_deadline_s
        while True:
            try:
                await repo.ping()
                await repo.ensure_indexes()
                return repo
            except Exception as exc:  # pymongo raises several unrelated types here
                if time.monotonic() >= deadline:
                    repo.close()
                    raise MongoUnavailable(
                        f"MongoDB did not answer within {s.mongo_connect_deadline_s:g}s "
                        f"({type(exc).__name__})"
                    ) from None
                log.warning("archive.mongo_connect_retry", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def start(self, bus: Bus) -> None:
        self.repo = await self._connect_mongo()
        self.writer = ArchiveWriter(
            self.repo,
            accepting=lambda: self.accepting,
            gap_deadline_s=self.settings.archive_gap_deadline_s,
            cache_events=self.settings.archive_cache_events,
        )
        durable = self.settings.archive_durable
        self.consumers = [
            await bus.consume(
                stream=subjects.CALL_EVENTS_STREAM,
                durable=subjects.archive_consumer(durable, subjects.ARCHIVE_EVENTS),
                filter_subject=subjects.ALL_CALL_EVENTS,
                type_=AnyCallEvent,
                # A type newer than this archive still folds, as a revision changing nothing.
                fallback=CallEventEnvelope,
                handler=self.writer.on_event,
                batch_handler=self.writer.on_events,
                batch=self.settings.archive_batch_events,
            ),
            await bus.consume(
                stream=subjects.TRANSCRIPTS_STREAM,
                durable=subjects.archive_consumer(durable, subjects.ARCHIVE_SEGMENTS),
                filter_subject=subjects.ALL_TRANSCRIPT_SEGMENTS,
                type_=TranscriptSegment,
                handler=self.writer.on_segment,
            ),
            await bus.consume(
                stream=subjects.TRANSCRIPTS_STREAM,
                durable=subjects.archive_consumer(durable, subjects.ARCHIVE_CAPTIONS),
                filter_subject=subjects.ALL_CAPTIONS,
                type_=Caption,
                handler=self.writer.on_caption,
            ),
        ]
        log.info("archive.consuming", durable=durable, database=self.settings.mongo_database)

    async def stop_accepting(self) -> None:
        await super().stop_accepting()
        # Each consumer finishes (and acknowledges) the message in hand, then stops.
        for consumer in self.consumers:
            await consumer.stop()

    async def close(self) -> None:
        if self.repo is not None:
            self.repo.close()

    def load_extra(self) -> dict[str, float]:
        if self.writer is None:
            return {}
        return {
            "events_logged": float(self.writer.events_logged),
            "duplicates": float(self.writer.duplicates),
        }
