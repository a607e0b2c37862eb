"""The archive through a real nats-server and a real MongoDB wire-protocol server (nx-27017).

Replaying the stream gives the same documents; a restarted archive resumes where it was,
with no gap and no duplicate; out-of-order revisions wait for the missing one.
"""

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from gateway.archive import repository as r
from gateway.archive.documents import (
    CallSession,
    CaptionRecord,
    HistoryEntry,
    ParticipantRecord,
    TranscriptionRecord,
)
from gateway.archive.repository import ArchiveRepository
from gateway.archive.service import ArchiveService
from gateway.archive.settings import ArchiveSettings
from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent
from schemas.runtime import run_service
from tests.support.delivered import Delivered
from tests.support.mongo_server import MongoServer
from tests.support.nats_server import NatsServer, with_role
from tests.support.recorded_call import RecordedCall, recorded_call
from tests.support.waiting import eventually


def settings(nats: NatsServer, mongo: MongoServer, db: str, durable: str) -> ArchiveSettings:
    return ArchiveSettings(
        nats_url=nats.url,
        mongo_url=mongo.url,
        mongo_database=db,
        archive_durable=durable,
        nats_connect_deadline_s=5,
        mongo_connect_deadline_s=10,
        heartbeat_interval_s=1,
        drain_timeout_s=5,
    )


async def publish(bus: Bus, events: list[AnyCallEvent]) -> None:
    for e in events:
        await bus.js_publish(subjects.call_event(e.call_id, e.subject_name), e, msg_id=e.event_id)


async def publish_transcripts(bus: Bus, rec: RecordedCall) -> None:
    for s in rec.segments:
        await bus.publish(subjects.transcript_segment(s.call_id), s)
    for c in rec.captions:
        await bus.publish(subjects.caption(c.call_id, c.language), c)
    await bus.flush()


#: The projected collections, and what each document reads as.
_TYPED: dict[str, type[msgspec.Struct]] = {
    r.SESSIONS: CallSession,
    r.PARTICIPANTS: ParticipantRecord,
    r.HISTORY: HistoryEntry,
    r.TRANSCRIPTIONS: TranscriptionRecord,
    r.CAPTIONS: CaptionRecord,
}


async def snapshot(repo: ArchiveRepository, call_id: str | None) -> dict[str, list[dict[str, Any]]]:
    """Every archived document of one call (``None``: of every call); a projected one as
    the API reads it (nx-27017 hands back a time an update wrote as a string, one an insert
    wrote as a time: a document written once and one written twice differ in form, not in
    content)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for collection in (r.EVENTS, *_TYPED):
        docs = [
            d
            for d in await repo.dump(collection)
            if call_id is None or d.get("call_id") == call_id or d.get("_id") == call_id
        ]
        if collection in _TYPED:
            docs = [
                {
                    "_id": d["_id"],
                    **msgspec.to_builtins(
                        r.load_document(d, _TYPED[collection]), builtin_types=(datetime,)
                    ),
                }
                for d in docs
            ]
        out[collection] = docs
    return out


async def complete(repo: ArchiveRepository, rec: RecordedCall, timeout: float = 30) -> CallSession:
    async def done() -> bool:
        session = await repo.session(rec.call_id)
        if session is None or session.seq != rec.revised[-1].seq:
            return False
        segs, caps = await repo.transcript(rec.call_id)
        return len(segs) == 2 and len(caps) == 3

    await eventually(done, timeout, step=0.1)
    session = await repo.session(rec.call_id)
    assert session is not None
    return session


class RunningArchive:
    def __init__(self, s: ArchiveSettings) -> None:
        self.service = ArchiveService(s, f"archive-{s.archive_durable}")
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_service(self.service, self.stop))

    async def close(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 20)


@pytest.fixture
async def repo(mongo_server: MongoServer, uid: str) -> AsyncIterator[ArchiveRepository]:
    repository = ArchiveRepository.connect(mongo_server.url, f"db-{uid}")
    yield repository
    repository.close()


async def test_the_projection_of_a_recorded_call(
    nats_server: NatsServer, mongo_server: MongoServer, bus: Bus, repo: ArchiveRepository, uid: str
) -> None:
    rec = recorded_call(uid)
    events = list(rec.events)
    # Out of order (revision 6 before 5) and a duplicate outside JetStream's window.
    events[4], events[5] = events[5], events[4]
    await publish(bus, events)
    dup = rec.events[8]
    await bus.js_publish(subjects.call_event(dup.call_id, dup.subject_name), dup)
    await publish_transcripts(bus, rec)

    archive = RunningArchive(settings(nats_server, mongo_server, f"db-{uid}", f"a-{uid}"))
    try:
        session = await complete(repo, rec)
    finally:
        assert await archive.close() == 0

    assert session.status == "ended" and session.end_reason == "completed"
    assert session.mode == "p2p" and [m.to_mode for m in session.mode_changes] == ["sfu", "p2p"]
    assert session.pending_events == 0 and session.participant_count == 3
    assert session.guest_count == 1 and session.max_active == 3
    assert session.transcription_ever_enabled and session.setup_s == 6.0
    assert {i.user_id: i.outcome for i in session.invitees} == {
        rec.bob: "accepted",
        rec.carol: "missed",
        rec.dave: "missed",
    }
    people = {p.display_name: p for p in await repo.participants(rec.call_id)}
    assert people["Bob"].audio_enabled is False and people["Bob"].disconnects == 1
    assert people["Gus"].leave_reason == "left" and people["Gus"].caption_language == "en"
    assert people["Gus"].principal_id == rec.guest
    missed = await repo.history(rec.carol, missed=True)
    assert [h.call_id for h in missed] == [rec.call_id] and not missed[0].took_part
    assert await repo.history(rec.bob, missed=True) == []
    alice = await repo.history_entry(rec.alice, rec.call_id)
    assert alice is not None and alice.role == "initiator" and alice.took_part
    segments, captions = await repo.transcript(rec.call_id)
    assert [s.text for s in segments] == ["Hello everyone.", "Bonjour à tous."]
    assert sorted(c.language for c in captions) == ["en", "en", "fr"]
    logged = await snapshot(repo, rec.call_id)
    assert len(logged[r.EVENTS]) == len(rec.events)  # the duplicate was logged once
    for collection, keys in r.INDEXES:  # the indexes the queries need exist
        indexed = [
            [k for k, _ in info["key"]]
            for info in (await repo.db[collection].index_information()).values()
        ]
        assert [k for k, _ in keys] in indexed, (collection, keys)


async def test_replaying_the_stream_gives_the_same_documents(
    nats_server: NatsServer, mongo_server: MongoServer, bus: Bus, uid: str
) -> None:
    rec = recorded_call(uid)
    await publish(bus, rec.events)
    await publish_transcripts(bus, rec)
    snapshots = []
    # First pass; a replay over the same database (a new durable reads the whole stream
    # again); a replay into an empty database.
    for db, durable in (
        (f"r1-{uid}", f"r1-{uid}"),
        (f"r1-{uid}", f"r2-{uid}"),
        (f"r3-{uid}", f"r3-{uid}"),
    ):
        repository = ArchiveRepository.connect(mongo_server.url, db)
        archive = RunningArchive(settings(nats_server, mongo_server, db, durable))
        try:
            await complete(repository, rec)
            # A replay over existing documents: wait until it has read every event again.
            await eventually(_all_folded(archive, rec), 30, step=0.05)
            snapshots.append(await snapshot(repository, rec.call_id))
        finally:
            assert await archive.close() == 0
            repository.close()
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert all(snapshots[0][c] for c in snapshots[0])


async def test_a_restarted_archive_resumes_with_no_gap_and_no_duplicate(
    nats_server: NatsServer, mongo_server: MongoServer, bus: Bus, repo: ArchiveRepository, uid: str
) -> None:
    rec = recorded_call(uid)
    half = len(rec.events) // 2
    env = {
        **os.environ,
        "NATS_URL": nats_server.url,
        "MONGO_URL": mongo_server.url,
        "MONGO_DATABASE": f"db-{uid}",
        "ARCHIVE_DURABLE": "archive-crash",
        "SERVICE_ID": f"archive-{uid}",
        "HEARTBEAT_INTERVAL_S": "1",
    }

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.archive", env=with_role("gateway.archive", env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def logged() -> int:
        return len((await snapshot(repo, rec.call_id))[r.EVENTS])

    first = await spawn()
    try:
        await publish(bus, rec.events[:half])
        await eventually(lambda: _at_least(logged, half), 30, step=0.1)
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: nothing drained, nothing flushed
        await first.wait()
    await publish(bus, rec.events[half:])
    await publish_transcripts(bus, rec)
    second = await spawn()
    try:
        session = await complete(repo, rec)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(second.communicate(), 20)
    assert second.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
    assert session.seq == rec.revised[-1].seq and session.pending_events == 0
    assert await logged() == len(rec.events)
    participants = await repo.participants(rec.call_id)
    assert len(participants) == 3 and all(p.left_at is not None for p in participants)


def _all_folded(archive: RunningArchive, rec: RecordedCall) -> Callable[[], bool]:
    def check() -> bool:
        writer = archive.service.writer
        return writer is not None and writer.folded_count(rec.call_id) == len(rec.events)

    return check


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def test_a_missing_revision_holds_back_later_ones(
    nats_server: NatsServer, mongo_server: MongoServer, bus: Bus, repo: ArchiveRepository, uid: str
) -> None:
    rec = recorded_call(uid)
    gap = rec.revised[4]  # revision 5 arrives last, with the end (which ends the wait)
    end = rec.revised[-1]
    assert end.subject_name == "ended"
    await publish(bus, [e for e in rec.events if e is not gap and e is not end])
    archive = RunningArchive(settings(nats_server, mongo_server, f"db-{uid}", f"g-{uid}"))
    try:

        async def waiting() -> bool:
            s = await repo.session(rec.call_id)
            return s is not None and s.seq == 4 and s.pending_events == len(rec.revised) - 6

        await eventually(waiting, 30, step=0.1)
        await publish(bus, [gap, end])

        async def filled() -> bool:
            s = await repo.session(rec.call_id)
            return s is not None and s.status == "ended" and s.pending_events == 0

        await eventually(filled, 30, step=0.1)
    finally:
        assert await archive.close() == 0


async def test_an_event_type_newer_than_the_archive_does_not_freeze_the_call(
    nats_server: NatsServer, mongo_server: MongoServer, bus: Bus, repo: ArchiveRepository, uid: str
) -> None:
    """A newer gateway's event (unknown type) folds as a revision changing nothing, and a
    revision lost for good is skipped once the call ended."""
    rec = recorded_call(uid)
    fifth, sixth = rec.revised[4], rec.revised[5]
    newer = msgspec.json.encode(
        {**msgspec.to_builtins(fifth), "type": "call.something_newer", "extra": [1, 2]}
    )
    others = [e for e in rec.events if e is not fifth and e is not sixth]  # sixth: lost
    await publish(bus, others[:4])
    await bus.js.publish(
        subjects.call_event(rec.call_id, "something_newer"),
        newer,
        headers={"Nats-Msg-Id": fifth.event_id},
    )
    await publish(bus, others[4:])
    archive = RunningArchive(settings(nats_server, mongo_server, f"db-{uid}", f"g-{uid}"))
    try:

        async def ended() -> bool:
            s = await repo.session(rec.call_id)
            return s is not None and s.status == "ended" and s.pending_events == 0

        await eventually(ended, 30, step=0.1)
        session = await repo.session(rec.call_id)
        assert session is not None and session.missing_revisions == [sixth.seq]
        logged = [e for e in await repo.dump(r.EVENTS) if e["_id"] == fifth.event_id]
        assert logged and logged[0]["type"] == "call.something_newer"
        assert logged[0]["event"]["extra"] == [1, 2]  # kept as published, for a later fold
    finally:
        assert await archive.close() == 0


async def test_a_fold_older_than_what_is_stored_writes_nothing_in_its_bulk_write(
    repo: ArchiveRepository, uid: str
) -> None:
    """Documents of one collection are written in one bulk write, still version-guarded:
    an older fold (another instance, a redelivery) changes none of them; a newer one all."""
    from gateway.archive.projection import Sequenced, fold

    rec = recorded_call(uid)
    log = [Sequenced(i + 1, e, None) for i, e in enumerate(rec.events)]
    newer = ArchiveRepository.documents(fold(log))
    older = ArchiveRepository.documents(fold(log[: len(log) - 2]))
    assert sum(1 for c, _, _ in newer if c == r.PARTICIPANTS) > 1  # a real bulk write
    written = await repo.write(newer)
    assert written.get(r.PARTICIPANTS, 0) > 1 and written.get(r.SESSIONS) == 1
    before = await snapshot(repo, rec.call_id)
    assert await repo.write(older) == {}
    assert await snapshot(repo, rec.call_id) == before
    again = ArchiveRepository.documents(fold([*log, Sequenced(len(log) + 1, rec.events[-1], None)]))
    assert (await repo.write(again)).get(r.SESSIONS) == 1


async def test_writing_in_batches_gives_the_documents_written_one_by_one(
    mongo_server: MongoServer, uid: str
) -> None:
    """Three calls' events interleaved, written event by event, in batches of every size (a
    redelivery inside a batch and across batches) with and without the writer's memory of
    the calls' logs, and in batches shared by two writers (two instances on one durable:
    each logs events the other's memory does not hold, so each must notice its memory is
    short and read the log back): the same archive every time."""
    from gateway.archive.writer import ArchiveWriter

    recs = [recorded_call(f"{uid}-{i}") for i in range(3)]
    longest = max(len(x.events) for x in recs)
    order = [x.events[k] for k in range(longest) for x in recs if k < len(x.events)]
    delivered = _delivered(order)
    sizes = [1, 2, 3, 5, 8, 13, 21, 64]

    def batches() -> list[list[tuple[AnyCallEvent, Delivered]]]:
        out, at = [], 0
        for n in sizes * 10:
            if at >= len(delivered):
                break
            batch = delivered[at : at + n]
            if at and n > 2:
                batch = [delivered[at - 1], *batch]  # redelivered with the next ones
            out.append(batch)
            at += n
        return out

    dumps = {}
    for mode in ("one_by_one", "batches", "batches_no_memory", "two_writers"):
        repo = ArchiveRepository.connect(mongo_server.url, f"db-{uid}-{mode}")
        try:
            memory = 0 if mode == "batches_no_memory" else 10_000
            writers = [ArchiveWriter(repo, accepting=lambda: True, cache_events=memory)]
            if mode == "one_by_one":
                for event, msg in delivered:
                    await writers[0].on_event(event, msg)  # type: ignore[arg-type]
            else:
                if mode == "two_writers":
                    writers.append(ArchiveWriter(repo, accepting=lambda: True))
                for k, batch in enumerate(batches()):
                    # Two batches each in turn: a writer's memory holds for its second one,
                    # and is short once the other has logged events of its calls.
                    writer = writers[(k // 2) % len(writers)]
                    await writer.on_events(batch)  # type: ignore[arg-type]
                assert sum(w.duplicates for w in writers) > 0
            assert sum(w.events_logged for w in writers) == len(order)
            if mode in ("batches", "one_by_one"):
                assert writers[0].logs_known > 0  # the memory was used
            if mode == "two_writers":
                assert all(w.logs_known > 0 and w.logs_read > len(recs) for w in writers)
            dumps[mode] = await snapshot(repo, None)
        finally:
            repo.close()
    assert all(dumps["one_by_one"][c] for c in (r.EVENTS, r.SESSIONS, r.PARTICIPANTS, r.HISTORY))
    for mode in ("batches", "batches_no_memory", "two_writers"):
        assert dumps[mode] == dumps["one_by_one"], mode


async def test_an_event_logged_is_read_back_as_the_writer_remembers_it(
    repo: ArchiveRepository, uid: str
) -> None:
    """What the writer remembers of an event it logged is what reading the log gives (times
    to the millisecond, the stream time included), for a known type and an unknown one."""
    from gateway.archive.projection import Sequenced
    from schemas.call_events import CallEventEnvelope

    rec = recorded_call(uid)
    delivered = _delivered(rec.events)
    rows: list[r.ToLog] = [
        (e, m.metadata.sequence.stream, m.data, m.metadata.timestamp) for e, m in delivered
    ]
    rows = [(e, q, d, t and t.replace(microsecond=123456)) for e, q, d, t in rows]
    future = msgspec.json.encode(
        {
            "type": "call.someday",
            "call_id": rec.call_id,
            "event_id": f"f-{uid}",
            "seq": 0,
            "occurred_at": "2026-12-01T00:00:00.654321Z",
            "new_field": [1, 2],
        }
    )
    envelope = msgspec.json.decode(future, type=CallEventEnvelope)
    rows.append((envelope, len(rows) + 1, future, None))
    assert await repo.log_events(rows)
    remembered = [ArchiveRepository.as_read_back(row) for row in rows]
    read: list[Sequenced] = (await repo.call_logs([rec.call_id]))[rec.call_id]
    assert read == remembered
    assert remembered[0].stored_at is not None and remembered[0].stored_at.microsecond == 123000
    counted = await repo.log_counts([rec.call_id, f"none-{uid}"])
    assert counted == {rec.call_id: r.LogCount(len(rows), sum(row[1] for row in rows))}


async def test_logging_several_events_tells_the_new_from_the_redelivered(
    repo: ArchiveRepository, uid: str
) -> None:
    rec = recorded_call(uid)
    first, second, third = rec.events[:3]
    assert await repo.log_events([(first, 1, b"", None)]) == {first.event_id}
    rows = [
        (first, 1, b"", None),
        (second, 2, b"", None),
        (second, 2, b"", None),
        (third, 3, b"", None),
    ]
    assert await repo.log_events(rows) == {second.event_id, third.event_id}
    logs = await repo.call_logs([rec.call_id, f"none-{uid}"])
    assert list(logs) == [rec.call_id]
    assert [s.event.event_id for s in logs[rec.call_id]] == [e.event_id for e in rec.events[:3]]


def _delivered(events: list[AnyCallEvent]) -> list[tuple[AnyCallEvent, Delivered]]:
    from datetime import UTC, timedelta

    from schemas.codec import encode

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    return [
        (e, Delivered(i + 1, encode(e), t0 + timedelta(seconds=i))) for i, e in enumerate(events)
    ]


async def test_documents_written_before_per_document_versions_are_replaced(
    repo: ArchiveRepository, uid: str
) -> None:
    """A participant or history document of the old scheme (version = a log's length, here
    a long one) does not block the next fold's writes."""
    from gateway.archive.projection import Sequenced, fold
    from gateway.archive.writer import ArchiveWriter

    rec = recorded_call(uid)
    early = [Sequenced(i + 1, e, None) for i, e in enumerate(rec.events[:6])]
    old = [
        (c, i, msgspec.structs.replace(d, version=500))
        for c, i, d in ArchiveRepository.documents(fold(early))
    ]
    assert await repo.write(old)
    writer = ArchiveWriter(repo, accepting=lambda: True)
    await writer.on_events(_delivered(rec.events))  # type: ignore[arg-type]
    for collection in (r.PARTICIPANTS, r.HISTORY):
        docs = [d for d in await repo.dump(collection) if d["call_id"] == rec.call_id]
        assert docs and all(d["version"] > 500 for d in docs), collection
    left = [d for d in await repo.dump(r.PARTICIPANTS) if d["call_id"] == rec.call_id]
    assert all(d["left_at"] is not None for d in left)  # the call's end reached them


async def test_a_batch_that_fails_after_logging_still_counts_each_event_once(
    repo: ArchiveRepository, uid: str
) -> None:
    """The batch's events were logged, then its writes failed: retried one by one, each is
    counted (and observed) once as new, not as a redelivery."""
    from gateway.archive.writer import ArchiveWriter

    rec = recorded_call(uid)
    delivered = _delivered(rec.events)
    writer = ArchiveWriter(repo, accepting=lambda: True)
    real_write = repo.write_calls
    calls = 0

    async def fails_once(*args: Any) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug after logging")
        return await real_write(*args)

    repo.write_calls = fails_once  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        await writer.on_events(delivered)  # type: ignore[arg-type]
    assert writer.events_logged == 0
    for event, msg in delivered:  # what the bus helper does next
        await writer.on_event(event, msg)  # type: ignore[arg-type]
    assert writer.events_logged == len(rec.events) and writer.duplicates == 0
    session = await repo.session(rec.call_id)
    assert session is not None and session.seq == rec.revised[-1].seq


async def test_times_read_back_are_in_utc_after_documents_were_updated(
    repo: ArchiveRepository, uid: str
) -> None:
    """A document written twice (the second time by an update): every time read back from
    it is zoned UTC, as the history API hands them out (nx-27017 returns a top-level time
    an update wrote as a zoneless string)."""
    from gateway.archive.projection import Sequenced, fold

    rec = recorded_call(uid)
    log = [Sequenced(i + 1, e, None) for i, e in enumerate(rec.events)]
    await repo.write(ArchiveRepository.documents(fold(log[:4])))
    await repo.write(ArchiveRepository.documents(fold(log)))
    session = await repo.session(rec.call_id)
    participants = await repo.participants(rec.call_id)
    assert session is not None and participants
    people = {p.principal_id for p in participants if p.principal_id is not None}
    history = [await repo.history_entry(who, rec.call_id) for who in sorted(people)]
    assert history and all(h is not None for h in history)
    times: list[datetime] = []

    def collect(value: Any) -> None:
        if isinstance(value, datetime):
            times.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for doc in (session, *participants, *history):
        collect(msgspec.to_builtins(doc, builtin_types=(datetime,)))
    assert session.ended_at is not None and len(times) > len(participants) + 2
    assert all(t.utcoffset() == timedelta(0) for t in times), times


async def test_a_copy_in_the_batch_cannot_make_up_for_an_event_another_writer_logged(
    mongo_server: MongoServer, uid: str
) -> None:
    """Writer A remembers a call; B logs one of its events; A then gets the next event
    twice in one batch (published again after the de-duplication window). Counting the
    copy as new would match MongoDB's count by accident and fold a log missing B's event:
    A must read the log back and write what one writer alone writes."""
    from gateway.archive.documents import CallSession
    from gateway.archive.writer import ArchiveWriter

    rec = recorded_call(uid)
    delivered = _delivered([*rec.events, rec.events[-1]])
    first, foreign = delivered[:-3], delivered[-3]
    twice = delivered[-2:]
    sessions = []
    for mode in ("alone", "two"):
        repo = ArchiveRepository.connect(mongo_server.url, f"db-{uid}-{mode}")
        try:
            a = ArchiveWriter(repo, accepting=lambda: True)
            b = ArchiveWriter(repo, accepting=lambda: True) if mode == "two" else a
            await a.on_events(first)  # type: ignore[arg-type]
            await b.on_events([foreign])  # type: ignore[list-item]
            await a.on_events(twice)  # type: ignore[arg-type]
            session = await repo.session(rec.call_id)
            assert isinstance(session, CallSession)
            sessions.append(session)
        finally:
            repo.close()
    alone, two = sessions
    assert alone.missing_revisions == [] and alone.pending_events == 0
    assert two == alone
