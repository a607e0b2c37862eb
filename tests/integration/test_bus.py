"""The bus helper against a real nats-server."""

import asyncio

import msgspec
import pytest

from schemas import subjects
from schemas.bus import Bus, Incoming, RpcFailure
from schemas.call_events import AnyCallEvent, CallEnded, CallInitiated, Participant
from schemas.catalogue import FAMILIES
from schemas.codec import decode
from schemas.dead_letter import DeadLetter
from schemas.errors import (
    KeyExists,
    NoResponders,
    RequestTimeout,
    RevisionMismatch,
    RpcFailed,
)
from schemas.heartbeat import ServiceHeartbeat
from schemas.kv import TypedKv
from schemas.rpc import RpcError
from tests.support.samples import samples
from tests.support.waiting import Collector, eventually


async def test_typed_round_trip_of_every_family(bus: Bus, uid: str) -> None:
    for family in FAMILIES:
        got: Collector[object] = Collector()
        subject = f"test.{uid}.{family.name}"
        await bus.subscribe(subject, family.union, got)
        sent = [m for m in samples(uid) if type(m) in family.members]
        for message in sent:
            await bus.publish(subject, message)
        assert await got.wait_count(len(sent)) == sent


async def test_garbage_goes_to_dead_letter_and_subscriber_keeps_serving(bus: Bus, uid: str) -> None:
    subject = subjects.call_event(uid, "ended")
    good: Collector[object] = Collector()
    letters: Collector[object] = Collector()
    await bus.subscribe(subject, AnyCallEvent, good)
    await bus.subscribe(subjects.dead_letter(subject), DeadLetter, letters)

    await bus.nc.publish(subject, b"{not json")
    await bus.nc.publish(subject, b'{"type":"call.ended","call_id":"x"}')  # missing reason
    await bus.publish(subject, CallEnded(call_id=uid, reason="completed"))

    [letter1, letter2] = await letters.wait_count(2)
    assert isinstance(letter1, DeadLetter) and letter1.payload == b"{not json"
    assert letter1.failure == "decode" and letter1.original_subject == subject
    assert isinstance(letter2, DeadLetter) and "reason" in letter2.reason
    [delivered] = await good.wait_count(1)
    assert isinstance(delivered, CallEnded) and delivered.reason == "completed"
    assert bus.stats.decode_failures >= 2

    # The dead letters are also kept in the DEAD_LETTERS stream: nothing is lost. (The bus
    # waited for the stream's ack before counting, so it is there now.)
    assert bus.stats.dead_lettered >= 2
    info = await bus.js.get_last_msg(subjects.DEAD_LETTER_STREAM, subjects.dead_letter(subject))
    assert decode(info.data or b"", DeadLetter).original_subject == subject


async def test_handler_exception_does_not_stop_the_subscription(bus: Bus, uid: str) -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def flaky(evt: CallEnded, _: Incoming) -> None:
        seen.append(evt.reason)
        if evt.reason == "failed":
            raise RuntimeError("boom")
        if len(seen) == 2:
            done.set()

    await bus.subscribe(f"test.{uid}", CallEnded, flaky)
    await bus.publish(f"test.{uid}", CallEnded(call_id=uid, reason="failed"))
    await bus.publish(f"test.{uid}", CallEnded(call_id=uid, reason="completed"))
    await asyncio.wait_for(done.wait(), 5)
    assert seen == ["failed", "completed"]
    assert bus.stats.handler_failures == 1


async def test_queue_group_delivers_each_message_once(bus: Bus, uid: str) -> None:
    a: Collector[object] = Collector()
    b: Collector[object] = Collector()
    subject = subjects.audio_chunk(uid, "p1")
    await bus.subscribe(subject, CallEnded, a, queue="workers")
    await bus.subscribe(subject, CallEnded, b, queue="workers")
    for _ in range(40):
        await bus.publish(subject, CallEnded(call_id=uid, reason="completed"))
    await bus.flush()

    await eventually(lambda: len(a.items) + len(b.items) >= 40, 5)
    assert len(a.items) + len(b.items) == 40


class Echo(msgspec.Struct, frozen=True, kw_only=True, tag="test.echo"):
    text: str


async def test_request_reply_with_typed_errors(bus: Bus, uid: str) -> None:
    subject = subjects.media_rpc(f"node-{uid}", "echo")

    async def responder(req: Echo, _: Incoming) -> Echo:
        if req.text == "missing":
            raise RpcFailure("not_found", "no such session")
        if req.text == "crash":
            raise ZeroDivisionError("secret internals")
        return Echo(text=req.text.upper())

    await bus.serve(subject, Echo, responder)
    assert await bus.request(subject, Echo(text="hi"), Echo) == Echo(text="HI")

    with pytest.raises(RpcFailed) as missing:
        await bus.request(subject, Echo(text="missing"), Echo)
    assert missing.value.code == "not_found"

    with pytest.raises(RpcFailed) as crashed:
        await bus.request(subject, Echo(text="crash"), Echo)
    assert crashed.value.code == "internal" and "secret" not in crashed.value.message

    reply = await bus.nc.request(subject, b'{"type":"test.echo"}', timeout=2)
    error: RpcError = decode(reply.data, RpcError)
    assert error.code == "bad_request" and "text" in error.message
    # Still serving after all that.
    assert await bus.request(subject, Echo(text="ok"), Echo) == Echo(text="OK")


async def test_request_timeout_and_no_responders_are_typed(bus: Bus, uid: str) -> None:
    with pytest.raises(NoResponders):
        await bus.request(f"test.{uid}.nobody", Echo(text="x"), Echo, timeout=1)

    async def slow(req: Echo, _: Incoming) -> Echo:
        await asyncio.sleep(1)
        return req

    await bus.serve(f"test.{uid}.slow", Echo, slow)
    with pytest.raises(RequestTimeout):
        await bus.request(f"test.{uid}.slow", Echo(text="x"), Echo, timeout=0.1)


async def test_jetstream_publish_and_durable_consumer(bus: Bus, uid: str) -> None:
    got: Collector[object] = Collector()
    evt = CallInitiated(
        call_id=uid,
        conversation_id="conv",
        conversation_type="DIRECT",
        initiator=Participant(participant_id="p1", kind="user", user_id="u1"),
    )
    seq = await bus.js_publish(subjects.call_event(uid, evt.subject_name), evt, msg_id=evt.event_id)
    # Same event id again: de-duplicated by the stream, same sequence.
    assert (
        await bus.js_publish(subjects.call_event(uid, evt.subject_name), evt, msg_id=evt.event_id)
        == seq
    )

    consumer = await bus.consume(
        stream=subjects.CALL_EVENTS_STREAM,
        durable=f"test-{uid}",
        filter_subject=subjects.call_events_of(uid),
        type_=AnyCallEvent,
        handler=got,
    )
    assert await got.wait_count(1) == [evt]
    await consumer.stop()


async def test_consumer_parks_a_message_its_handler_keeps_failing(bus: Bus, uid: str) -> None:
    letters: Collector[object] = Collector()
    subject = subjects.call_event(uid, "ended")
    await bus.subscribe(subjects.dead_letter(subject), DeadLetter, letters)
    attempts = 0

    async def always_fails(evt: object, _: Incoming) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("handler bug")

    await bus.js_publish(subject, CallEnded(call_id=uid, reason="completed"))
    consumer = await bus.consume(
        stream=subjects.CALL_EVENTS_STREAM,
        durable=f"fail-{uid}",
        filter_subject=subject,
        type_=AnyCallEvent,
        handler=always_fails,
        max_deliver=2,
    )
    [letter] = await letters.wait_count(1, timeout=10)
    assert isinstance(letter, DeadLetter)
    assert letter.failure == "handler" and letter.delivery_attempts == 2 and attempts == 2
    await consumer.stop()


async def test_a_batch_consumer_takes_a_fetch_at_once_and_a_bad_message_fails_alone(
    bus: Bus, uid: str
) -> None:
    """What one fetch brings goes to the batch handler together; when the batch fails, each
    message is retried alone, so only the one the handler cannot take is dead-lettered."""
    letters: Collector[object] = Collector()
    await bus.subscribe(subjects.dead_letter(subjects.call_events_of(uid)), DeadLetter, letters)
    events = [CallEnded(call_id=uid, reason="completed", seq=i) for i in range(1, 7)]
    for evt in events:
        await bus.js_publish(subjects.call_event(uid, evt.subject_name), evt)
    # Undecodable: rejected on its own before the batch is handled.
    await bus.js.publish(subjects.call_event(uid, "ended"), b"{not json")
    batches: list[list[int]] = []
    handled: list[int] = []  # each message handled successfully, batch or alone

    async def batch(items: list[tuple[AnyCallEvent, Incoming]]) -> None:
        seqs = [e.seq for e, _ in items]
        batches.append(seqs)
        if 4 in seqs:
            raise RuntimeError("a bug on one message")
        handled.extend(seqs)

    async def single(evt: AnyCallEvent, _: Incoming) -> None:
        if evt.seq == 4:
            raise RuntimeError("a bug on one message")
        handled.append(evt.seq)

    consumer = await bus.consume(
        stream=subjects.CALL_EVENTS_STREAM,
        durable=f"batch-{uid}",
        filter_subject=subjects.call_events_of(uid),
        type_=AnyCallEvent,
        handler=single,
        batch_handler=batch,
        batch=64,
        max_deliver=2,
    )
    got = await letters.wait_count(2, timeout=15)
    failures = sorted(letter.failure for letter in got if isinstance(letter, DeadLetter))
    assert failures == ["decode", "handler"]
    await eventually(lambda: sorted(handled) == [1, 2, 3, 5, 6], 10)
    # The messages were in the stream before the consumer started: fetches brought several
    # at once, and they reached the batch handler together, in stream order.
    assert any(len(b) > 1 for b in batches)
    assert all(b == sorted(b) for b in batches)

    async def all_acknowledged() -> bool:
        info = await bus.js.consumer_info(subjects.CALL_EVENTS_STREAM, f"batch-{uid}")
        return bool(info.num_ack_pending == 0 and info.num_pending == 0)

    await eventually(all_acknowledged, 10)
    await consumer.stop()


async def test_kv_compare_and_set_rejects_a_stale_revision(bus: Bus, uid: str) -> None:
    kv: TypedKv[CallEnded] = await bus.kv(subjects.CALLS_BUCKET, CallEnded)
    first = CallEnded(call_id=uid, reason="completed")
    rev1 = await kv.create(uid, first)
    with pytest.raises(KeyExists):
        await kv.create(uid, first)

    entry = await kv.get(uid)
    assert entry is not None and entry.value == first and entry.revision == rev1

    second = CallEnded(call_id=uid, reason="missed")
    rev2 = await kv.update(uid, second, rev1)
    assert rev2 > rev1
    with pytest.raises(RevisionMismatch):
        await kv.update(uid, CallEnded(call_id=uid, reason="failed"), rev1)  # stale
    latest = await kv.get(uid)
    assert latest is not None and latest.value == second
    assert await kv.get(f"{uid}-absent") is None


async def test_heartbeat_decodes_from_raw_json(bus: Bus, uid: str) -> None:
    got: Collector[object] = Collector()
    await bus.subscribe(f"test.{uid}.hb", ServiceHeartbeat, got)
    hb = next(m for m in samples() if isinstance(m, ServiceHeartbeat))
    await bus.publish(f"test.{uid}.hb", hb)
    assert await got.wait_count(1) == [hb]


async def test_concurrent_responder_answers_requests_in_parallel(bus: Bus, uid: str) -> None:
    release = asyncio.Event()
    started = 0

    async def slow(req: Echo, _: Incoming) -> Echo:
        nonlocal started
        started += 1
        if started == 3:
            release.set()
        await release.wait()  # all three must be in hand at once to get here
        return req

    subject = f"test.{uid}.parallel"
    await bus.serve(subject, Echo, slow, concurrency=4)
    replies: list[Echo] = await asyncio.gather(
        *(bus.request(subject, Echo(text=str(i)), Echo, timeout=5) for i in range(3))
    )
    assert [r.text for r in replies] == ["0", "1", "2"]
