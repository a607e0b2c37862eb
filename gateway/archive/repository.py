"""The archive in MongoDB, through motor: what the consumer writes and the history API reads.

Only query features that both MongoDB and nx-27017 (the embedded stack's wire-protocol
server) support are used: equality and range filters, ``$or``, ``$in``, ``$lt``, sorts on
two keys, ``update_one`` with ``$set`` and ``upsert``, unique ``_id``, and one aggregation
(``$match`` then ``$group`` with ``$sum``: a count per call). Not used: other pipelines,
upserts that take ``_id`` from a ``replace_one`` filter, transactions. Booleans
may come back from nx-27017 as 0/1; documents are decoded non-strictly, so both servers give
the same Structs.
"""

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple, TypeVar

import bson
import msgspec
from bson.codec_options import CodecOptions
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from gateway.archive.documents import (
    CallSession,
    CaptionRecord,
    Doc,
    HistoryEntry,
    LoggedEvent,
    ParticipantRecord,
    TranscriptionRecord,
    Versioned,
)
from gateway.archive.projection import Folded, LoggedCallEvent, Sequenced
from schemas.call_events import AnyCallEvent, CallEventEnvelope
from schemas.logs import get_logger

log = get_logger("gateway.archive.repository")

D = TypeVar("D", bound=msgspec.Struct)

#: One event to log: the event, its stream sequence, the payload as published, and when
#: the stream stored it.
ToLog = tuple[LoggedCallEvent, int, bytes, datetime | None]

EVENTS = "call_events"
SESSIONS = "call_sessions"
PARTICIPANTS = "call_participants"
HISTORY = "call_history"
TRANSCRIPTIONS = "transcriptions"
CAPTIONS = "captions"
#: MongoDB's duplicate-key error: a version-guarded upsert found a document as new or newer.
_DUPLICATE_KEY = 11000

#: (collection, keys) of every index the archive's queries need.
INDEXES: tuple[tuple[str, list[tuple[str, int]]], ...] = (
    (EVENTS, [("call_id", ASCENDING), ("stream_seq", ASCENDING)]),
    (EVENTS, [("type", ASCENDING), ("occurred_at", ASCENDING)]),
    (SESSIONS, [("conversation_id", ASCENDING), ("created_at", DESCENDING)]),
    (SESSIONS, [("created_at", DESCENDING)]),
    (PARTICIPANTS, [("call_id", ASCENDING), ("joined_at", ASCENDING)]),
    (PARTICIPANTS, [("principal_id", ASCENDING)]),
    (HISTORY, [("principal_id", ASCENDING), ("created_ms", DESCENDING), ("call_id", DESCENDING)]),
    (HISTORY, [("principal_id", ASCENDING), ("missed", ASCENDING), ("created_ms", DESCENDING)]),
    (TRANSCRIPTIONS, [("call_id", ASCENDING), ("spoken_ms", ASCENDING)]),
    (CAPTIONS, [("call_id", ASCENDING), ("utterance_id", ASCENDING)]),
)


class InvalidCursor(ValueError):
    """A pagination cursor that this API did not hand out."""


#: What a cursor holds: a time in ms that BSON can store (a signed 64-bit int: a larger one
#: would fail in the driver, a 500), and an id of bounded length.
_CursorFields = tuple[
    Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)], Annotated[str, msgspec.Meta(max_length=256)]
]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last item's time (ms since the epoch) and id."""

    at_ms: int
    key: str

    def encode(self) -> str:
        raw = msgspec.json.encode([self.at_ms, self.key])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            at_ms, key = msgspec.json.decode(raw, type=_CursorFields)
        except msgspec.ValidationError as exc:
            raise InvalidCursor(f"the cursor is not one this API returned ({exc})") from None
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise InvalidCursor("the cursor is not one this API returned") from None
        return cls(at_ms, key)


def _fields(doc: msgspec.Struct) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(doc, builtin_types=(datetime,))
    return out


def _utc_times(fields: Any, envelope: CallEventEnvelope) -> dict[str, Any]:
    """An undecoded event's fields, with its time stored as a time (like decoded ones)."""
    out: dict[str, Any] = dict(fields) if isinstance(fields, dict) else {}
    out["occurred_at"] = envelope.occurred_at
    return out


def _utc(value: Any) -> Any:
    """Times are stored in UTC; some servers hand them back without a zone (nx-27017)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, dict):
        return {k: _utc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utc(v) for v in value]
    return value


def _aware(value: Any) -> Any:
    """``value`` with every time in it (in Structs and lists, at any depth) in UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, msgspec.Struct):
        changed = {}
        for name in value.__struct_fields__:
            before = getattr(value, name)
            after = _aware(before)
            if after is not before:
                changed[name] = after
        return msgspec.structs.replace(value, **changed) if changed else value
    if isinstance(value, list):
        items = [_aware(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def load_document(raw: dict[str, Any], type_: type[D]) -> D:
    """A stored document as its Struct, times in UTC. nx-27017 hands back a top-level time
    written by an update's ``$set`` as a string without a zone ("2026-12-01 09:00:00.1"),
    which the conversion reads as a naive time; MongoDB hands back an aware one."""
    loaded: D = _aware(msgspec.convert(_utc(raw), type_, strict=False))
    return loaded


class LogCount(NamedTuple):
    """What MongoDB holds of one call's log, in brief: how many events, and the sum of
    their stream sequences (two logs of the same length with different events differ in
    it, unless their sequences happen to add up the same)."""

    events: int
    stream_seq_sum: int


#: How BSON comes back from the server (``tz_aware`` as the client is configured).
_AS_READ: "CodecOptions[dict[str, Any]]" = CodecOptions(tz_aware=True, tzinfo=UTC)


def _sequenced(raw: dict[str, Any]) -> Sequenced:
    """An event-log document as the fold takes it."""
    fields = _utc(raw["event"])
    event: LoggedCallEvent
    try:
        event = msgspec.convert(fields, AnyCallEvent, strict=False)
    except msgspec.ValidationError:  # a type (or version) newer than this archive
        event = msgspec.convert(fields, CallEventEnvelope, strict=False)
    stored_at = raw.get("stored_at")
    return Sequenced(
        int(raw["stream_seq"]),
        event,
        _utc(stored_at) if isinstance(stored_at, datetime) else None,
    )


class ArchiveRepository:
    """The archive's collections in one database."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.db = client[database]

    @classmethod
    def connect(cls, url: str, database: str, *, timeout_s: float = 5.0) -> "ArchiveRepository":
        """A client (connections are made lazily; :meth:`ping` checks the server).

        Every wait is bounded by ``timeout_s`` (``MONGO_TIMEOUT_S``): finding a server,
        connecting, each socket read, and each operation as a whole (``timeoutMS``), so a
        server that accepted a request and then stalls raises a timeout instead of holding
        a consumer or a REST request for ever.
        """
        ms = max(1, int(timeout_s * 1000))
        client: Any = AsyncIOMotorClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=ms,
            timeoutMS=ms,
            appname="meeshy-calls",
        )
        return cls(client, database)

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    def close(self) -> None:
        self.client.close()

    async def ensure_indexes(self) -> None:
        """Create the indexes the queries need (idempotent)."""
        for collection, keys in INDEXES:
            await self.db[collection].create_index(keys)

    # --- the event log --------------------------------------------------------------------
    @staticmethod
    def _logged(
        event: LoggedCallEvent, stream_seq: int, payload: bytes, stored_at: datetime | None
    ) -> dict[str, Any]:
        """The event-log document of one event."""
        if isinstance(event, CallEventEnvelope):
            kind = event.type
            fields: dict[str, Any] = _utc_times(msgspec.json.decode(payload), event)
        else:
            kind = type(event).__struct_config__.tag  # type: ignore[assignment]
            fields = _fields(event)
        logged = LoggedEvent(
            event_id=event.event_id,
            call_id=event.call_id,
            seq=event.seq,
            stream_seq=stream_seq,
            type=kind,
            occurred_at=event.occurred_at,
            stored_at=stored_at,
            event=fields,
        )
        return {"_id": logged.event_id, **_fields(logged)}

    async def log_event(
        self,
        event: LoggedCallEvent,
        stream_seq: int,
        payload: bytes,
        stored_at: datetime | None = None,
    ) -> bool:
        """Keep the event; ``False`` when it was already logged (a redelivery or replay).

        An event known only by its envelope is kept as published (``payload``), so a later
        version of the archive can fold it.
        """
        try:
            await self.db[EVENTS].insert_one(self._logged(event, stream_seq, payload, stored_at))
        except DuplicateKeyError:
            return False
        return True

    async def log_events(self, rows: Sequence[ToLog]) -> set[str]:
        """:meth:`log_event` for several events in one round trip; the ids newly logged
        (an id already there, or twice in ``rows``, is a redelivery: not new)."""
        if not rows:
            return set()
        docs = [self._logged(*row) for row in rows]
        failed: set[int] = set()
        try:
            await self.db[EVENTS].insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            failed = {int(e["index"]) for e in errors}
        return {str(d["_id"]) for i, d in enumerate(docs) if i not in failed}

    @classmethod
    def as_read_back(cls, row: ToLog) -> Sequenced:
        """What :meth:`call_logs` will read of an event :meth:`log_events` logged: its
        document through BSON (times to the millisecond, as the server keeps them)."""
        raw = bson.decode(bson.encode(cls._logged(*row)), codec_options=_AS_READ)
        return _sequenced(raw)

    async def log_counts(self, call_ids: Sequence[str]) -> dict[str, LogCount]:
        """How many events of each call are logged, and the sum of their stream
        sequences (a call with none is absent)."""
        if not call_ids:
            return {}
        pipeline = [
            {"$match": {"call_id": {"$in": list(call_ids)}}},
            {"$group": {"_id": "$call_id", "n": {"$sum": 1}, "seqs": {"$sum": "$stream_seq"}}},
        ]
        cursor = self.db[EVENTS].aggregate(pipeline)
        return {str(row["_id"]): LogCount(int(row["n"]), int(row["seqs"])) async for row in cursor}

    async def call_log(self, call_id: str) -> list[Sequenced]:
        """Every logged event of a call, in stream order."""
        return (await self.call_logs([call_id])).get(call_id, [])

    async def call_logs(self, call_ids: Sequence[str]) -> dict[str, list[Sequenced]]:
        """The logs of several calls in one query: call id -> events in stream order (a
        call with nothing logged is absent)."""
        if not call_ids:
            return {}
        query: dict[str, Any] = (
            {"call_id": call_ids[0]} if len(call_ids) == 1 else {"call_id": {"$in": list(call_ids)}}
        )
        cursor = self.db[EVENTS].find(query).sort("stream_seq", ASCENDING)
        out: dict[str, list[Sequenced]] = {}
        async for raw in cursor:
            out.setdefault(str(raw["call_id"]), []).append(_sequenced(raw))
        return out

    # --- projected documents ------------------------------------------------------------
    async def _put(self, collection: str, doc_id: str, doc: Doc, version: int) -> bool:
        """Write ``doc`` unless a document of this or a later version is there."""
        try:
            result = await self.db[collection].update_one(
                {"_id": doc_id, "version": {"$lt": version}},
                {"$set": _fields(doc)},
                upsert=True,
            )
        except DuplicateKeyError:
            return False  # the stored one is as new or newer
        return bool(result.modified_count or result.upserted_id is not None)

    @staticmethod
    def documents(folded: Folded) -> list[tuple[str, str, Versioned]]:
        """``(collection, _id, document)`` of everything a fold produced.

        The session comes last: once it shows a revision, everything folded with it is
        written (readers may treat it as the commit marker).
        """
        out: list[tuple[str, str, Versioned]] = []
        if folded.session is None:
            return out
        for p in folded.participants:
            out.append((PARTICIPANTS, f"{p.call_id}:{p.participant_id}", p))
        for h in folded.history:
            out.append((HISTORY, f"{h.principal_id}:{h.call_id}", h))
        out.append((SESSIONS, folded.session.call_id, folded.session))
        return out

    async def _put_many(self, collection: str, docs: Sequence[tuple[str, Versioned]]) -> int:
        """:meth:`_put` for several documents of one collection in one round trip (their
        order does not matter: they are different documents); how many changed."""
        if len(docs) == 1:
            doc_id, doc = docs[0]
            return int(await self._put(collection, doc_id, doc, doc.version))
        ops = [
            UpdateOne(
                {"_id": doc_id, "version": {"$lt": doc.version}},
                {"$set": _fields(doc)},
                upsert=True,
            )
            for doc_id, doc in docs
        ]
        try:
            result = await self.db[collection].bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            # A duplicate key is a stored document as new or newer (see _put); anything
            # else is a real failure.
            if any(e.get("code") != _DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
            return int(exc.details.get("nModified", 0)) + int(exc.details.get("nUpserted", 0))
        return int(result.modified_count) + int(result.upserted_count)

    async def write(self, docs: Sequence[tuple[str, str, Versioned]]) -> dict[str, int]:
        """Write one call's folded documents; how many changed, per collection (see
        :meth:`write_calls`)."""
        return await self.write_calls([docs])

    async def write_calls(
        self, calls: Sequence[Sequence[tuple[str, str, Versioned]]]
    ) -> dict[str, int]:
        """Write the folded documents of several calls, each only over an older version
        of itself; how many changed, per collection.

        One round trip per collection, sessions last: once a session shows a revision,
        everything folded with it is written (readers may treat it as the commit marker).
        """
        by_collection: dict[str, list[tuple[str, Versioned]]] = {}
        for docs in calls:
            for collection, doc_id, doc in docs:
                by_collection.setdefault(collection, []).append((doc_id, doc))
        sessions = by_collection.pop(SESSIONS, [])
        order = [*by_collection.items(), *([(SESSIONS, sessions)] if sessions else [])]
        written: dict[str, int] = {}
        for collection, run in order:
            changed = await self._put_many(collection, run)
            if changed:
                written[collection] = changed
        return written

    async def put_revisioned(self, collection: str, doc_id: str, doc: Doc, revision: int) -> bool:
        """Keep the highest revision of a transcript segment or caption."""
        try:
            result = await self.db[collection].update_one(
                {"_id": doc_id, "revision": {"$lt": revision}},
                {"$set": _fields(doc)},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return bool(result.modified_count or result.upserted_id is not None)

    async def put_transcription(self, record: TranscriptionRecord) -> bool:
        doc_id = f"{record.call_id}:{record.utterance_id}"
        return await self.put_revisioned(TRANSCRIPTIONS, doc_id, record, record.revision)

    async def put_caption(self, record: CaptionRecord) -> bool:
        doc_id = f"{record.call_id}:{record.utterance_id}:{record.language}"
        return await self.put_revisioned(CAPTIONS, doc_id, record, record.revision)

    # --- reads (history API, analysts) ----------------------------------------------------
    async def history(
        self,
        principal_id: str,
        *,
        missed: bool | None = None,
        after: Cursor | None = None,
        limit: int = 20,
    ) -> list[HistoryEntry]:
        """One person's calls, newest first, after ``after``."""
        query: dict[str, Any] = {"principal_id": principal_id}
        if missed is not None:
            query["missed"] = missed
        if after is not None:
            query["$or"] = [
                {"created_ms": {"$lt": after.at_ms}},
                {"created_ms": after.at_ms, "call_id": {"$lt": after.key}},
            ]
        cursor = (
            self.db[HISTORY]
            .find(query)
            .sort([("created_ms", DESCENDING), ("call_id", DESCENDING)])
            .limit(limit)
        )
        return [load_document(raw, HistoryEntry) async for raw in cursor]

    async def history_entry(self, principal_id: str, call_id: str) -> HistoryEntry | None:
        raw = await self.db[HISTORY].find_one({"_id": f"{principal_id}:{call_id}"})
        return None if raw is None else load_document(raw, HistoryEntry)

    async def session(self, call_id: str) -> CallSession | None:
        raw = await self.db[SESSIONS].find_one({"_id": call_id})
        return None if raw is None else load_document(raw, CallSession)

    async def participants(self, call_id: str) -> list[ParticipantRecord]:
        cursor = self.db[PARTICIPANTS].find({"call_id": call_id}).sort("joined_at", ASCENDING)
        return [load_document(raw, ParticipantRecord) async for raw in cursor]

    async def transcript(
        self, call_id: str, *, after: Cursor | None = None, limit: int = 500
    ) -> tuple[list[TranscriptionRecord], list[CaptionRecord]]:
        """Final segments in the order they were spoken, and their captions."""
        query: dict[str, Any] = {"call_id": call_id}
        if after is not None:
            query["$or"] = [
                {"spoken_ms": {"$gt": after.at_ms}},
                {"spoken_ms": after.at_ms, "utterance_id": {"$gt": after.key}},
            ]
        cursor = (
            self.db[TRANSCRIPTIONS]
            .find(query)
            .sort([("spoken_ms", ASCENDING), ("utterance_id", ASCENDING)])
            .limit(limit)
        )
        segments = [load_document(raw, TranscriptionRecord) async for raw in cursor]
        if not segments:
            return [], []
        ids = [s.utterance_id for s in segments]
        caption_cursor = self.db[CAPTIONS].find({"call_id": call_id, "utterance_id": {"$in": ids}})
        captions = [load_document(raw, CaptionRecord) async for raw in caption_cursor]
        return segments, captions

    async def dump(self, collection: str) -> list[dict[str, Any]]:
        """Every document of a collection, by ``_id`` (tests and operators)."""
        return [raw async for raw in self.db[collection].find({}).sort("_id", ASCENDING)]
