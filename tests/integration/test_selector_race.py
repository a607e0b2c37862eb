"""Two mode selectors deciding the same call at the same moment (real NATS, in process).

The shared durable consumer hands each event to one instance, so the race that matters is
two instances deciding from their own view at once (a scan, a wake-up and an event
together): the compare-and-set on the call lets exactly one migration start.
"""

import asyncio
import time

from gateway import state_machine as sm
from gateway.call_store import CallStore
from gateway.selector.placement import NodeTable
from gateway.selector.rules import Rules
from gateway.selector.service import ModeSelector
from gateway.tokens import Principal
from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent, MigrationStarted
from schemas.call_state import ActiveCallClaim, CallState, ConversationMember, ConversationRecord
from schemas.codec import decode
from schemas.kv import TypedKv
from tests.support.samples import idle_node_heartbeat

TIMERS = sm.Timers(
    ring_timeout_s=60, heartbeat_timeout_s=60, reconnect_grace_s=5, max_duration_s=600
)


async def test_two_selectors_racing_on_one_call_start_one_migration(bus: Bus, uid: str) -> None:
    calls_kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    claims_kv: TypedKv[ActiveCallClaim] = await bus.kv(subjects.CALL_CLAIMS_BUCKET, ActiveCallClaim)
    store = CallStore(bus, calls_kv, claims_kv)
    users = [f"u{i}-{uid}" for i in range(3)]
    conv = ConversationRecord(
        conversation_id=f"race-{uid}",
        type="GROUP",
        members=[ConversationMember(user_id=u) for u in users],
    )
    now = time.time()
    started = await store.create(
        sm.start_call(
            call_id=f"call-race-{uid}",
            conversation=conv,
            initiator=Principal(users[0], "user"),
            participant_id="p-0",
            media="video",
            now=now,
            timers=TIMERS,
            resume_token="t0",
        )
    )
    call_id = started.call_id
    for i in (1, 2):

        def join(state: CallState, i: int = i) -> sm.Outcome:
            return sm.join(
                state,
                Principal(users[i], "user"),
                participant_id=f"p-{i}",
                now=time.time(),
                resume_token=f"t{i}",
                max_participants=50,
                may_join=True,
            )

        await store.apply(call_id, join)

    # Each instance has its own table of the nodes, from the same heartbeats.
    selectors = []
    for _ in range(2):
        table = NodeTable(6.0)
        for node_id in ("m1", "m2"):
            table.update(idle_node_heartbeat(node_id), time.time())
        selectors.append(ModeSelector(store, table, Rules(prewarm=False), concurrency=4))
    for _ in range(3):  # again and again: the losers find the migration under way
        await asyncio.gather(*(s.decide_call(call_id) for s in selectors))

    entry = await calls_kv.get(call_id)
    assert entry is not None and entry.value.migration is not None
    assert entry.value.migration.epoch == 1
    sub = await bus.js.subscribe(subjects.call_events_of(call_id), ordered_consumer=True)
    info = await bus.js.stream_info(subjects.CALL_EVENTS_STREAM)
    assert info.state.last_seq is not None
    events: list[AnyCallEvent] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            events.append(decode(msg.data, AnyCallEvent))
            if msg.metadata.sequence.stream >= info.state.last_seq or msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    starts = [e for e in events if isinstance(e, MigrationStarted)]
    assert len(starts) == 1, starts
    assert starts[0].node_id in ("m1", "m2")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
