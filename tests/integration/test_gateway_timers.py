"""Several sweepers racing on the same calls (real KV): each due timer fires exactly once."""

import asyncio
import time
from typing import Any

from gateway import state_machine as sm
from gateway.call_store import CallStore
from gateway.delivery import Delivery
from gateway.timers import CallMirror, Sweeper
from gateway.tokens import Principal
from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.call_events import AnyCallEvent, CallEnded, RingEnded
from schemas.call_state import (
    ActiveCallClaim,
    CallState,
    ConversationMember,
    ConversationRecord,
)
from schemas.kv import TypedKv
from tests.support.waiting import eventually


async def _no_emit(event: str, payload: dict[str, Any], sid: str) -> None:
    return None


async def test_racing_sweepers_end_each_call_once(bus: Bus, uid: str) -> None:
    calls_kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    claims_kv: TypedKv[ActiveCallClaim] = await bus.kv(subjects.CALL_CLAIMS_BUCKET, ActiveCallClaim)
    ended: list[CallEnded] = []
    rings_ended: list[RingEnded] = []

    async def on_event(event: object, _: Incoming) -> None:
        if isinstance(event, CallEnded) and event.call_id.endswith(uid):
            ended.append(event)
        if isinstance(event, RingEnded) and event.call_id.endswith(uid):
            rings_ended.append(event)

    await bus.subscribe(subjects.ALL_CALL_EVENTS, AnyCallEvent, on_event)
    store = CallStore(bus, calls_kv, claims_kv, Delivery(bus, _no_emit))
    now = time.time()
    timers = sm.Timers(
        ring_timeout_s=0.3, heartbeat_timeout_s=60, reconnect_grace_s=5, max_duration_s=600
    )
    call_ids = []
    for i in range(12):
        conv = ConversationRecord(
            conversation_id=f"tm{i}-{uid}",
            type="DIRECT",
            members=[ConversationMember(user_id=f"a{i}"), ConversationMember(user_id=f"b{i}")],
        )
        out = sm.start_call(
            call_id=f"call{i}-{uid}",
            conversation=conv,
            initiator=Principal(f"a{i}", "user"),
            media="audio",
            now=now,
            timers=timers,
            resume_token="t",
        )
        await store.publish(await store.create(out))
        call_ids.append(out.call_id)

    mirrors = [CallMirror(await bus.js.key_value(subjects.CALLS_BUCKET)) for _ in range(4)]
    sweepers = [Sweeper(store, m, 0.02, 3600) for m in mirrors]
    for m in mirrors:
        await m.start()
    for s in sweepers:
        s.start()
    try:
        await eventually(lambda: len({e.call_id for e in ended}) >= len(call_ids), 10)
        await asyncio.sleep(0.3)  # many more sweep rounds of every sweeper
    finally:
        for s in sweepers:
            await s.stop()
        for m in mirrors:
            await m.stop()
    assert sorted(e.call_id for e in ended) == sorted(call_ids)
    assert {e.reason for e in ended} == {"missed"}
    # Each timer fired once: one ring end and one call end per call, whichever sweeper won.
    # (``Sweeper.fired`` is not compared: the session's server also holds other tests' calls,
    # which these sweepers may legitimately sweep.)
    assert sorted(e.call_id for e in rings_ended) == sorted(call_ids)
    assert sum(s.fired for s in sweepers) >= len(call_ids)
    for call_id in call_ids:
        entry = await calls_kv.get(call_id)
        assert entry is not None and entry.value.status == "ended"
    # The claims were released: each conversation may start a new call.
    for i in range(12):
        assert await claims_kv.get(f"tm{i}-{uid}") is None


async def test_events_of_a_writer_that_died_before_publishing_are_recovered_once(
    bus: Bus, uid: str
) -> None:
    calls_kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    claims_kv: TypedKv[ActiveCallClaim] = await bus.kv(subjects.CALL_CLAIMS_BUCKET, ActiveCallClaim)
    store = CallStore(bus, calls_kv, claims_kv, Delivery(bus, _no_emit))
    conv = ConversationRecord(
        conversation_id=f"ob-{uid}",
        type="DIRECT",
        members=[ConversationMember(user_id="a"), ConversationMember(user_id="b")],
    )
    timers = sm.Timers(
        ring_timeout_s=60, heartbeat_timeout_s=60, reconnect_grace_s=5, max_duration_s=600
    )
    started = await store.create(
        sm.start_call(
            call_id=f"call-ob-{uid}",
            conversation=conv,
            initiator=Principal("a", "user"),
            media="audio",
            now=time.time(),
            timers=timers,
            resume_token="t",
        )
    )
    await store.publish(started)  # the normal path: published, then removed from the outbox
    entry = await calls_kv.get(started.call_id)
    assert entry is not None and entry.value.outbox == []

    # A writer wins its compare-and-set, then dies before publishing anything.
    lost = await store.apply(started.call_id, lambda s: sm.decline(s, "b", now=time.time()))
    assert lost is not None and lost.state.status == "ended"
    entry = await calls_kv.get(started.call_id)
    assert entry is not None and len(entry.value.outbox) == len(lost.events)

    stored: dict[str, int] = {}
    mirror = CallMirror(await bus.js.key_value(subjects.CALLS_BUCKET))
    await mirror.start()
    sweepers = [Sweeper(store, mirror, 0.02, 3600, outbox_grace_s=0.2) for _ in range(3)]
    for s in sweepers:
        s.start()
    try:

        async def drained() -> bool:
            current = await calls_kv.get(started.call_id)
            return current is not None and not current.value.outbox

        await eventually(drained, 10, step=0.05)
    finally:
        for s in sweepers:
            await s.stop()
        await mirror.stop()
    assert sum(s.recovered for s in sweepers) >= len(lost.events)
    sub = await bus.js.subscribe(subjects.call_events_of(started.call_id), ordered_consumer=True)
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            name = msg.subject.rsplit(".", 1)[1]
            stored[name] = stored.get(name, 0) + 1
    except Exception:
        pass
    await sub.unsubscribe()
    assert stored["ended"] == 1 and stored["ring_ended"] == 1
    assert sum(stored.values()) == len(started.events) + len(lost.events)
