"""Faults around SFU calls: a gateway SIGKILLed mid-call leaks no media session."""

import asyncio
import time
from collections.abc import Iterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.media import MediaNodeHeartbeat
from schemas.media_events import AnyMediaEvent, SessionClosed
from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector

pytestmark = pytest.mark.slow

LEASE_S = 4.0


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer) -> Iterator[CallStack]:
    calls = CallStack(nats_server.url, gateways=2, env={"MEDIA_LEASE_S": str(LEASE_S)}).start_all()
    yield calls
    calls.stop()


async def test_a_killed_gateway_leaks_no_media_session_past_its_lease(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    conv = f"kill-{uid}"
    users = [f"u{i}-{uid}" for i in range(3)]
    stack.put_conversation(conv, "GROUP", users)
    # b's socket (and so its media session) is held by gateway 1, the others by gateway 0.
    urls = [stack.urls[0], stack.urls[1], stack.urls[0]]
    a, b, c = [
        await CallClient.connect(url, stack.token(u), name=f"p{i}", heartbeats=True)
        for i, (url, u) in enumerate(zip(urls, users, strict=True))
    ]
    clients += [a, b, c]
    call_id = (await a.initiate(conv))["call"]["callId"]
    await b.accept(call_id)
    await c.join(call_id)
    for x in (a, b, c):
        await x.wait_mode("sfu")
    closed: Collector[AnyMediaEvent] = Collector()
    await bus.subscribe(subjects.media_events_of(call_id), AnyMediaEvent, closed)
    loads: Collector[MediaNodeHeartbeat] = Collector()
    await bus.subscribe(subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat, loads)
    await bus.flush()
    node = stack.of_kind("media_node")[0].service_id
    await loads.wait(
        lambda beats: any(h.node_id == node and h.participants >= 3 for h in beats), 10
    )

    stack.kill(1)  # SIGKILL: nothing renews b's lease, nobody closes its session
    await closed.wait(
        lambda events: any(
            isinstance(e, SessionClosed) and e.participant_id == b.participant_id for e in events
        ),
        LEASE_S * 3,
    )
    gone = next(e for e in closed.items if isinstance(e, SessionClosed))
    # Nobody closed it (the gateway that could is dead): its lease ran out on the node.
    assert gone.reason == "lease_expired"
    # The node's own count says so too, and the others keep their media through it.
    await loads.wait(
        lambda beats: any(h.node_id == node and h.participants == 2 for h in beats[-3:]), 10
    )
    t = time.monotonic()
    c.others.discard(b.participant_id or "")
    a.others.discard(b.participant_id or "")
    for x in (a, c):
        await x.wait_everyone(t, "sfu")
    # Restore the stack for any later test in this module.
    stack.gateways[1] = stack.spawn(1)
    await asyncio.to_thread(stack.wait_ready, stack.gateways[1])
