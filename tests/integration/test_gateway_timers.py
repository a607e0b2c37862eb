"""Several sweepers racing on the same calls (real KV): each due timer fires exactly once."""

import time

from gateway import state_machine as sm
from gateway.call_store import CallStore
from gateway.presence import PresenceReader
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
    Presence,
)
from schemas.codec import decode
from schemas.kv import TypedKv
from tests.support.crashing_store import CrashingStore
from tests.support.waiting import eventually


async def _sweepers(
    bus: Bus, store: CallStore, count: int, *, shared_mirror: bool = False, grace: float = 2.0
) -> tuple[list[CallMirror], list[Sweeper]]:
    presence: TypedKv[Presence] = await bus.kv(subjects.PRESENCE_BUCKET, Presence)
    n_mirrors = 1 if shared_mirror else count
    mirrors = [CallMirror(await bus.js.key_value(subjects.CALLS_BUCKET)) for _ in range(n_mirrors)]
    for m in mirrors:
        await m.start()
    sweepers = [
        Sweeper(
            store,
            mirrors[i % n_mirrors],
            PresenceReader(presence),
            interval_s=0.02,
            retention_s=3600,
            outbox_grace_s=grace,
        )
        for i in range(count)
    ]
    for s in sweepers:
        s.start()
    return mirrors, sweepers


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
    store = CallStore(bus, calls_kv, claims_kv)
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
            participant_id=f"p-a{i}",
            media="audio",
            now=now,
            timers=timers,
            resume_token="t",
        )
        await store.create(out)
        call_ids.append(out.call_id)

    mirrors, sweepers = await _sweepers(bus, store, 4)
    try:
        await eventually(lambda: len({e.call_id for e in ended}) >= len(call_ids), 10)
        # Every sweeper sweeps many more times; then a round trip on the connection they
        # publish on brings any duplicate they sent.
        done = {id(s): s.rounds for s in sweepers}
        await eventually(lambda: all(s.rounds >= done[id(s)] + 10 for s in sweepers), 10)
        await bus.flush()
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
    store = CallStore(bus, calls_kv, claims_kv)
    conv = ConversationRecord(
        conversation_id=f"ob-{uid}",
        type="GROUP",
        members=[ConversationMember(user_id=u) for u in ("a", "b", "c")],
    )
    timers = sm.Timers(
        ring_timeout_s=60, heartbeat_timeout_s=60, reconnect_grace_s=5, max_duration_s=600
    )
    started = await store.create(
        sm.start_call(
            call_id=f"call-ob-{uid}",
            conversation=conv,
            initiator=Principal("a", "user"),
            participant_id="p-a",
            media="audio",
            now=time.time(),
            timers=timers,
            resume_token="t",
        )
    )
    # The normal path: published by the store itself, then removed from the outbox.
    entry = await calls_kv.get(started.call_id)
    assert entry is not None and entry.value.outbox == [] and entry.value.seq == 4

    # Writers win their compare-and-set, then die before publishing anything: two changes
    # whose events share a subject (the case a "last message" check used to get wrong).
    crashing = CrashingStore(bus, calls_kv, claims_kv)
    lost_events = []
    for user in ("b", "c"):

        def decline(state: CallState, who: str = user) -> sm.Outcome:
            return sm.decline(state, who, now=time.time())

        out = await crashing.apply(started.call_id, decline)
        assert out is not None
        lost_events += out.events
    entry = await calls_kv.get(started.call_id)
    assert entry is not None and len(entry.value.outbox) == len(lost_events)
    # Another gateway published the first of them before dying too (a duplicate to avoid).
    first = entry.value.outbox[0]
    await bus.js.publish(
        first.subject, bytes(first.data), headers={"Nats-Msg-Id": first.message_id}
    )

    mirrors, sweepers = await _sweepers(bus, store, 3, shared_mirror=True, grace=0.2)
    try:

        async def drained() -> bool:
            current = await calls_kv.get(started.call_id)
            return current is not None and not current.value.outbox

        await eventually(drained, 10, step=0.05)
    finally:
        for s in sweepers:
            await s.stop()
        await mirrors[0].stop()
    assert sum(s.recovered for s in sweepers) == len(lost_events) - 1
    sub = await bus.js.subscribe(subjects.call_events_of(started.call_id), ordered_consumer=True)
    seqs: list[int] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            event: AnyCallEvent = decode(msg.data, AnyCallEvent)
            seqs.append(event.seq)
    except TimeoutError:
        pass
    await sub.unsubscribe()
    # Every event exactly once, in the call's revision order.
    assert seqs == list(range(1, len(started.events) + len(lost_events) + 1))


async def test_stale_heartbeats_time_nobody_out_while_presence_is_unavailable(
    bus: Bus, uid: str
) -> None:
    """Two people whose last heartbeats are long past the timeout: a sweeper whose gateway
    cannot currently handle heartbeats leaves them in; once presence is back, they are swept
    when they have been silent a whole timeout outside the outage."""
    from gateway.presence_health import PresenceHealth

    calls_kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    claims_kv: TypedKv[ActiveCallClaim] = await bus.kv(subjects.CALL_CLAIMS_BUCKET, ActiveCallClaim)
    presence: TypedKv[Presence] = await bus.kv(subjects.PRESENCE_BUCKET, Presence)
    store = CallStore(bus, calls_kv, claims_kv)
    long_ago = time.time() - 60
    timers = sm.Timers(
        ring_timeout_s=600, heartbeat_timeout_s=6, reconnect_grace_s=5, max_duration_s=3600
    )
    conv = ConversationRecord(
        conversation_id=f"pr-{uid}",
        type="DIRECT",
        members=[ConversationMember(user_id=f"a{uid}"), ConversationMember(user_id=f"b{uid}")],
    )
    started = sm.start_call(
        call_id=f"callpr-{uid}",
        conversation=conv,
        initiator=Principal(f"a{uid}", "user"),
        participant_id=f"p-a{uid}",
        media="audio",
        now=long_ago,
        timers=timers,
        resume_token="t",
    )
    await store.create(started)
    joined = sm.join(
        started.state,
        Principal(f"b{uid}", "user"),
        participant_id=f"p-b{uid}",
        now=long_ago,
        resume_token="t2",
        max_participants=50,
        may_join=True,
    )
    await store.apply(started.call_id, lambda s: joined)
    stopped_at: list[float | None] = [long_ago + 1]
    health = PresenceHealth(clock=lambda: stopped_at[0] or time.time())
    failed = health.started()
    health.ended(failed, ok=False)  # the bus stopped answering a second after their beats
    stopped_at[0] = None  # and the clock is the real one from here
    # A mirror holding this call only (not started): the session's server also holds other
    # tests' calls, and this sweeper is not to sweep them.
    mirror = CallMirror(await bus.js.key_value(subjects.CALLS_BUCKET))
    entry = await calls_kv.get(started.call_id)
    assert entry is not None and len(entry.value.participants) == 2
    mirror.calls[started.call_id] = (entry.value, entry.revision)
    sweeper = Sweeper(
        store, mirror, PresenceReader(presence, health), interval_s=0.1, retention_s=3600
    )

    async def status() -> str:
        entry = await calls_kv.get(started.call_id)
        assert entry is not None
        return entry.value.status

    try:
        # The sweeper's read of their presence is answered: the outage ends now, and their
        # 60 s of silence are 1 s outside it, of the 6 s timeout.
        await sweeper.sweep_once()
        assert await status() == "active"
        assert health.outage_within(long_ago, time.time()) > 50
        sweeper.start()

        async def swept() -> bool:
            return await status() == "ended"

        await eventually(swept, 20)
        entry = await calls_kv.get(started.call_id)
        assert entry is not None and entry.value.end_reason == "heartbeat_timeout"
    finally:
        await sweeper.stop()
