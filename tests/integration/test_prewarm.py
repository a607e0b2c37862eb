"""Pre-warm: while a GROUP call of a larger conversation is P2P, every participant holds an
idle SFU session, so the switch to the SFU only starts sending."""

import time
from collections.abc import Iterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent, MigrationStarted
from schemas.media import MediaNodeHeartbeat
from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer) -> Iterator[CallStack]:
    calls = CallStack(nats_server.url, selector_env={"SELECTOR_PREWARM": "true"}).start_all()
    yield calls
    calls.stop()


async def test_a_prewarmed_call_switches_on_its_idle_sessions(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    conv = f"warm-{uid}"
    users = [f"u{i}-{uid}" for i in range(4)]
    stack.put_conversation(conv, "GROUP", users)
    a, b, c = [
        await CallClient.connect(stack.urls[i % 2], stack.token(u), name=f"p{i}", heartbeats=True)
        for i, u in enumerate(users[:3])
    ]
    clients += [a, b, c]
    loads: Collector[MediaNodeHeartbeat] = Collector()
    await bus.subscribe(subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat, loads)
    call_id = (await a.initiate(conv))["call"]["callId"]
    log: Collector[AnyCallEvent] = Collector()
    await bus.subscribe(subjects.call_events_of(call_id), AnyCallEvent, log)
    await bus.flush()
    await b.accept(call_id)
    t = time.monotonic()
    for x in (a, b):
        await x.wait_everyone(t, "p2p")  # P2P carries the call...
        await x.wait_for("call:sfu-prewarm", timeout=20)  # ...and an idle SFU session waits
    await loads.wait(lambda beats: any(h.idle_sessions >= 2 for h in beats[-3:]), 15)
    warm = {x.name: x.sfu.session_id for x in (a, b) if x.sfu is not None}
    assert len(warm) == 2

    t = time.monotonic()
    await c.join(call_id)
    for x in (a, b, c):
        await x.wait_everyone(t, "sfu")
        await x.wait_mode("sfu")
    started = [e for e in log.items if isinstance(e, MigrationStarted)]
    assert len(started) == 1 and started[0].prewarmed
    # The pre-warmed sessions were the ones used: nothing was opened again for a and b.
    assert {x.name: x.sfu.session_id for x in (a, b) if x.sfu is not None} == warm
