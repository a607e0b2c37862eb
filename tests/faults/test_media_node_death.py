"""A media node SIGKILLed during an SFU call: the call moves to another node by itself."""

import time
from collections.abc import Iterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent, CallModeChanged, MigrationStarted, ParticipantLeft
from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer) -> Iterator[CallStack]:
    calls = CallStack(
        nats_server.url,
        gateways=2,
        selectors=1,
        media_nodes=2,
        selector_env={"SELECTOR_NODE_EXPIRY_S": "30"},
        media_env={"MEDIA_NODE_REPORT_INTERVAL_S": "2"},
    ).start_all()
    yield calls
    calls.stop()


async def test_a_killed_media_node_moves_the_call_to_another_node(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    conv = f"node-{uid}"
    users = [f"u{i}-{uid}" for i in range(3)]
    stack.put_conversation(conv, "GROUP", users)
    people = [
        await CallClient.connect(
            stack.urls[i % 2],
            stack.token(u),
            name=f"p{i}",
            heartbeats=True,
            colour=((200, 40, 40), (40, 200, 40), (40, 40, 200))[i],
        )
        for i, u in enumerate(users)
    ]
    clients += people
    a, b, c = people
    call_id = (await a.initiate(conv))["call"]["callId"]
    log: Collector[AnyCallEvent] = Collector()
    await bus.subscribe(subjects.call_events_of(call_id), AnyCallEvent, log)
    await bus.flush()
    await b.accept(call_id)
    await c.join(call_id)
    for x in people:
        await x.wait_mode("sfu", timeout=30)
    first = next(
        e for e in log.items if isinstance(e, CallModeChanged) and e.outcome == "completed"
    )
    doomed = first.node_id
    assert doomed is not None
    old_sessions = {x.name: x.sfu.session_id for x in people if x.sfu}

    t = time.monotonic()
    stack.kill_service(doomed)
    await log.wait(
        lambda items: any(
            isinstance(e, CallModeChanged) and e.epoch > first.epoch and e.outcome == "completed"
            for e in items
        ),
        20,
    )
    # The events say what happened: a move of the SFU call to the surviving node, because
    # its node went away (found by the selector's probes, long before the 30 s expiry).
    moved = [e for e in log.items if isinstance(e, MigrationStarted) and e.epoch > first.epoch]
    assert [(e.from_mode, e.to_mode, e.reason) for e in moved] == [
        ("sfu", "sfu", "node_unavailable")
    ], moved
    survivor = moved[0].node_id
    assert survivor is not None and survivor != doomed
    done = next(
        e for e in log.items if isinstance(e, CallModeChanged) and e.epoch == moved[0].epoch
    )
    assert done.outcome == "completed" and done.node_id == survivor
    # Every participant has a new session on the survivor, and everyone's media flows again.
    for x in people:
        assert x.sfu is not None and x.sfu.session_id != old_sessions[x.name]
        await x.wait_everyone(t, "sfu")
    assert not [e for e in log.items if isinstance(e, ParticipantLeft)]
    assert not stack.tracebacks(), stack.logs()
