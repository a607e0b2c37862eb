"""A gateway killed with SIGKILL: the calls it started still miss and end on time, once.

Deadlines live in the call's KV state and every gateway sweeps them by compare-and-set, so
the survivors fire the dead gateway's timers; exactly one CAS wins, so one event is
published however many gateways sweep.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.call_events import AnyCallEvent, CallEnded
from schemas.call_state import CallState
from schemas.kv import TypedKv
from tests.support.call_client import CallClient
from tests.support.gateways import GatewayCluster
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually

RING_S = 3.0
HEARTBEAT_TIMEOUT_S = 3.0


@pytest.fixture
def cluster(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    gateways = GatewayCluster(
        nats_server.url,
        count=3,
        env={
            "CALL_RING_TIMEOUT_S": str(RING_S),
            "CALL_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "CALL_RECONNECT_GRACE_S": "2",
        },
    ).start()
    yield gateways
    gateways.stop()


class Ends:
    """Every CallEnded on the bus, by call id."""

    def __init__(self) -> None:
        self.by_call: dict[str, list[CallEnded]] = {}

    async def __call__(self, event: object, _: Incoming) -> None:
        if isinstance(event, CallEnded):
            self.by_call.setdefault(event.call_id, []).append(event)


async def _watch_ends(bus: Bus) -> Ends:
    ends = Ends()
    await bus.subscribe(subjects.ALL_CALL_EVENTS, AnyCallEvent, ends)
    await bus.flush()
    return ends


async def _stream_count(bus: Bus, call_id: str) -> int:
    """CallEnded messages stored in the stream for this call (duplicates would show)."""
    subject = subjects.call_event(call_id, "ended")
    info = await bus.js.stream_info(subjects.CALL_EVENTS_STREAM, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


@dataclass
class RingingCall:
    alice: CallClient
    bob: CallClient
    call_id: str
    ends: Ends
    initiated_at: float


async def _ring_bob(
    cluster: GatewayCluster, bus: Bus, uid: str, clients: list[CallClient], bob_gateway: int
) -> RingingCall:
    """Alice (on gateway 0) calls bob (on ``bob_gateway``) in a DIRECT conversation."""
    alice_id, bob_id, conv = f"alice-{uid}", f"bob-{uid}", f"dm-{uid}"
    cluster.put_conversation(conv, "DIRECT", [alice_id, bob_id])
    ends = await _watch_ends(bus)
    alice = await CallClient.connect(cluster.urls[0], cluster.token(alice_id), media=False)
    bob = await CallClient.connect(cluster.urls[bob_gateway], cluster.token(bob_id), media=False)
    clients += [alice, bob]
    initiated_at = time.monotonic()
    call_id = (await alice.initiate(conv))["call"]["callId"]
    await bob.wait_for("call:incoming")
    return RingingCall(alice, bob, call_id, ends, initiated_at)


async def _assert_ended_once(bus: Bus, call: RingingCall, reason: str) -> None:
    """Once the call's state says ended with nothing left in its outbox (or is gone), no
    gateway can end it again: every change is a compare-and-set on that state and an ended
    call takes none. So the counts are final from then on; no quiet window needed."""
    calls: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)

    async def settled() -> bool:
        entry = await calls.get(call.call_id)
        return entry is None or (entry.value.status == "ended" and not entry.value.outbox)

    await eventually(settled, 10, step=0.05)
    await eventually(lambda: bool(call.ends.by_call.get(call.call_id)), 5)
    assert [e.reason for e in call.ends.by_call.get(call.call_id, [])] == [reason]
    assert await _stream_count(bus, call.call_id) == 1


async def test_ring_timeout_fires_once_after_the_starting_gateway_dies(
    cluster: GatewayCluster, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    call = await _ring_bob(cluster, bus, uid, clients, bob_gateway=1)
    bob, call_id = call.bob, call.call_id
    cluster.kill(0)  # the gateway that started the call and holds the caller

    missed = await bob.wait_for("call:missed", lambda p: p["callId"] == call_id, timeout=10)
    elapsed = time.monotonic() - call.initiated_at
    assert missed["callId"] == call_id
    # Not before the ring timeout (a lower bound only: a busy machine makes it later, and
    # the wait above bounds it from above).
    assert elapsed >= RING_S - 0.2, elapsed
    await _assert_ended_once(bus, call, "missed")
    assert len(bob.seen("call:missed")) == 1


async def test_a_caller_lost_with_its_gateway_leaves_on_heartbeat_timeout(
    cluster: GatewayCluster, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    call = await _ring_bob(cluster, bus, uid, clients, bob_gateway=2)
    alice, bob, call_id = call.alice, call.bob, call.call_id
    await bob.accept(call_id)
    bob.start_heartbeats(0.5)
    await alice.heartbeat()
    last_beat = time.monotonic()
    cluster.kill(0)  # no disconnect is ever reported for alice: only her silence

    ended = await bob.wait_for("call:ended", timeout=HEARTBEAT_TIMEOUT_S + 5)
    elapsed = time.monotonic() - last_beat
    assert ended["reason"] == "heartbeat_timeout" and ended["callId"] == call_id
    assert elapsed >= HEARTBEAT_TIMEOUT_S - 0.2, elapsed  # not before her silence ran out
    await _assert_ended_once(bus, call, "heartbeat_timeout")
