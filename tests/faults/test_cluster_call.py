"""A whole call system on a three-node NATS cluster loses one node mid-call.

Streams and buckets are replicated x3 (``NATS_STREAM_REPLICAS=3``, as ``compose.yaml``
runs), so the survivors hold a quorum: the call goes on (compare-and-set on ``calls``, the
outbox into ``CALL_EVENTS``, notices to the sockets), the services that were connected to
the dead node reconnect to another by themselves, and ``CALL_EVENTS`` holds every revision
of the call with no gap.

While a bucket whose leader was on the dead node elects a new one (seconds on these two
cores), a command may be answered late or refused ``unavailable``, retryable as it says;
heartbeats are not held up behind it, and stale ones time nobody out meanwhile
(``gateway/presence.py``), so nobody is swept from the call.
"""

from collections.abc import AsyncIterator, Iterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent, CallEnded
from schemas.call_state import CallState
from schemas.codec import decode
from schemas.heartbeat import ServiceHeartbeat
from schemas.js_retry import retry_transient
from schemas.kv import TypedKv
from schemas.provisioning import provision
from schemas.settings import BusSettings
from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack
from tests.support.nats_server import NatsCluster
from tests.support.waiting import Collector, eventually

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    own = NatsCluster().start()
    yield own
    own.cleanup()


@pytest.fixture(scope="module")
def stack(cluster: NatsCluster) -> Iterator[CallStack]:
    calls = CallStack(
        cluster.url,
        gateways=2,
        selectors=1,
        media_nodes=1,
        common_env={"NATS_STREAM_REPLICAS": "3"},
    ).start_all()
    yield calls
    calls.stop()


@pytest.fixture
async def own_bus(cluster: NatsCluster) -> AsyncIterator[Bus]:
    settings = BusSettings(nats_url=cluster.url, nats_stream_replicas=3, nats_connect_deadline_s=10)
    bus = await Bus.connect(settings, "cluster-call-test")
    await provision(bus.js, settings)
    yield bus
    await bus.close()


async def _stored_events(bus: Bus, call_id: str) -> list[AnyCallEvent]:
    """Every event of the call in ``CALL_EVENTS``, read back from the stream (its consumer
    made again while the stream may still be electing a leader)."""
    sub = await retry_transient(
        lambda: bus.js.subscribe(subjects.call_events_of(call_id), ordered_consumer=True),
        what="test read-back",
        idempotent=True,
    )
    found: list[AnyCallEvent] = []
    try:
        while not any(isinstance(e, CallEnded) for e in found):
            msg = await sub.next_msg(timeout=10)
            found.append(decode(msg.data, AnyCallEvent))
    finally:
        await sub.unsubscribe()
    return found


async def _taken(client: CallClient, event: str, data: dict[str, object]) -> None:
    """Send a command until the gateway takes it: refused only ``unavailable`` meanwhile."""
    for _ in range(10):
        ack = await client.request(event, data, timeout=15)
        if ack.get("ok"):
            return
        error = ack.get("error")
        assert isinstance(error, dict) and error.get("code") == "unavailable", ack
    raise AssertionError(f"{event} still refused: {ack}")


async def test_a_call_goes_on_when_one_nats_node_dies_and_no_event_is_lost(
    cluster: NatsCluster, stack: CallStack, own_bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    bus = own_bus
    conv = f"dm-{uid}"
    stack.put_conversation(conv, "DIRECT", [f"a-{uid}", f"b-{uid}"])
    a = await CallClient.connect(stack.urls[0], stack.token(f"a-{uid}"), name="a", heartbeats=True)
    b = await CallClient.connect(
        stack.urls[1], stack.token(f"b-{uid}"), name="b", heartbeats=True, colour=(200, 40, 40)
    )
    clients += [a, b]
    call_id = (await a.initiate(conv))["call"]["callId"]
    await b.accept(call_id)
    await a.wait_media()
    assert a.participant_id

    # Kill a node this test's own connection does not use (it must watch throughout); the
    # services are spread over all three, so some of them lose their server.
    connected = bus.nc.connected_url.port if bus.nc.connected_url else None
    victim = next(n for n in cluster.nodes if n.port != connected)
    victim.kill()

    # Every service goes on beating (reconnected by itself where it used the dead node).
    beats: Collector[ServiceHeartbeat] = Collector()
    await bus.subscribe(subjects.ALL_SERVICE_HEARTBEATS, ServiceHeartbeat, beats)
    await bus.flush()
    ids = {g.service_id for g in stack.gateways} | set(stack.services)
    await beats.wait(lambda items: {h.service_id for h in items} >= ids, 30)

    # The call goes on: state changes reach the other side, media never stopped.
    for enabled in (False, True):

        def toggled_to(p: dict[str, object], enabled: bool = enabled) -> bool:
            return p.get("audioEnabled") is enabled

        await _taken(a, "call:toggle-audio", {"callId": call_id, "enabled": enabled})
        toggled = await b.wait_for("call:media-toggled", toggled_to, timeout=30)
        assert toggled["participantId"] == a.participant_id
    seen = (a.frames("video"), b.frames("video"))
    await eventually(
        lambda: a.frames("video") >= seen[0] + 10 and b.frames("video") >= seen[1] + 10, 15
    )
    await _taken(a, "call:end", {"callId": call_id})
    await b.wait_for("call:ended", timeout=30)

    # CALL_EVENTS holds every revision, 1..last, once each.
    kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    entry = await kv.get(call_id)
    assert entry is not None
    stored = await _stored_events(bus, call_id)
    revisions = sorted(e.seq for e in stored if e.seq > 0)
    assert revisions == list(range(1, entry.value.seq + 1)), revisions
    assert not stack.tracebacks(), stack.logs()
