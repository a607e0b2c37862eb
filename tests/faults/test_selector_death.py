"""The selector that started a migration is SIGKILLed: another instance finishes or ends it.

Selectors keep nothing a successor needs: the migration is in the call's KV state (epoch,
target, deadline, who is ready), they share one durable consumer of ``CALL_EVENTS``, and
each scans every live call. So whatever the dead one would have done next (complete the
migration when the last unready participant leaves, fail it at its deadline) the other
does, and no call is left half-way between two modes.
"""

from collections.abc import Iterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import (
    AnyCallEvent,
    CallModeChanged,
    MigrationStarted,
    ParticipantMediaPath,
)
from schemas.call_state import CallState
from schemas.kv import TypedKv
from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack, ServiceProcess
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector, eventually

pytestmark = pytest.mark.slow

DEADLINE_S = 8.0


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer) -> Iterator[CallStack]:
    calls = CallStack(
        nats_server.url,
        gateways=2,
        selectors=2,
        media_nodes=1,
        selector_env={"SELECTOR_MIGRATION_DEADLINE_S": str(DEADLINE_S)},
    ).start_all()
    yield calls
    calls.stop()


async def _migrating_call(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> tuple[list[CallClient], str, Collector[AnyCallEvent]]:
    """a and b talk P2P; c joins, brings its SFU path up and never reports it, so the
    migration to the SFU stays open with a and b ready."""
    conv = f"grp-{uid}"
    users = [f"u{i}-{uid}" for i in range(3)]
    stack.put_conversation(conv, "GROUP", users)
    a, b = [
        await CallClient.connect(stack.urls[i], stack.token(u), name=f"p{i}", heartbeats=True)
        for i, u in enumerate(users[:2])
    ]
    c = await CallClient.connect(
        stack.urls[0], stack.token(users[2]), name="p2", heartbeats=True, report_switches=False
    )
    clients += [a, b, c]
    call_id = (await a.initiate(conv))["call"]["callId"]
    log: Collector[AnyCallEvent] = Collector()
    await bus.subscribe(subjects.call_events_of(call_id), AnyCallEvent, log)
    await bus.flush()
    await b.accept(call_id)
    await a.wait_media()
    await c.join(call_id)
    await log.wait(lambda items: any(isinstance(e, MigrationStarted) for e in items), 30)
    epoch = next(e.epoch for e in log.items if isinstance(e, MigrationStarted))
    ready = {a.participant_id, b.participant_id}

    def both_ready(items: list[AnyCallEvent]) -> bool:
        paths = [e for e in items if isinstance(e, ParticipantMediaPath) and e.epoch == epoch]
        return {e.participant_id for e in paths if e.state == "ready"} >= ready

    try:
        await log.wait(both_ready, 30)
    except TimeoutError:
        raise AssertionError(f"a and b not ready: {log.items}") from None
    return [a, b, c], call_id, log


async def _kill_the_deciding_selector(stack: CallStack, call_id: str) -> ServiceProcess:
    """SIGKILL the selector instance that started this call's migration."""

    def starter() -> ServiceProcess | None:
        for service in stack.of_kind("selector"):
            for line in service.log_text().splitlines():
                if '"selector.decided"' in line and call_id in line and "MigrationStarted" in line:
                    return service
        return None

    await eventually(lambda: starter() is not None, 10)
    dead = starter()
    assert dead is not None
    stack.kill_service(dead.service_id)
    return dead


async def _state(bus: Bus, call_id: str) -> CallState:
    kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    entry = await kv.get(call_id)
    assert entry is not None
    return entry.value


def _ends(log: Collector[AnyCallEvent]) -> list[tuple[int, str, str, str]]:
    return [
        (e.epoch, e.to_mode, e.outcome, e.reason)
        for e in log.items
        if isinstance(e, CallModeChanged)
    ]


async def test_the_survivor_completes_a_migration_when_the_last_unready_one_leaves(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    (a, b, c), call_id, log = await _migrating_call(stack, bus, uid, clients)
    dead = await _kill_the_deciding_selector(stack, call_id)
    assert not _ends(log), "the migration ended before the selector died"

    await c.leave()  # everyone still in (a and b) is ready: the migration can complete
    await log.wait(lambda _: bool(_ends(log)), 20)
    assert _ends(log)[0][:3] == (1, "sfu", "completed")
    for x in (a, b):
        await x.wait_mode("sfu")
    # Down to two, the survivor also brings the call back to P2P after the hold.
    await log.wait(lambda _: len(_ends(log)) >= 2, 30)
    assert _ends(log)[1][:3] == (2, "p2p", "completed")
    for x in (a, b):
        await x.wait_mode("p2p")
    state = await _state(bus, call_id)
    assert state.mode == "p2p" and state.migration is None and state.media_node_id is None
    starts = [(e.epoch, e.to_mode) for e in log.items if isinstance(e, MigrationStarted)]
    assert starts == [(1, "sfu"), (2, "p2p")]
    stack.add("selector")
    assert dead.service_id not in {s.service_id for s in stack.of_kind("selector")}


async def test_the_survivor_fails_a_migration_at_its_deadline_and_the_call_stays_p2p(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    (a, b, c), call_id, log = await _migrating_call(stack, bus, uid, clients)
    await _kill_the_deciding_selector(stack, call_id)

    # c never brings its SFU path up: only the deadline can end the migration now.
    await log.wait(lambda _: bool(_ends(log)), DEADLINE_S + 20)
    assert _ends(log)[0] == (1, "sfu", "failed", "deadline")
    state = await _state(bus, call_id)
    assert state.mode == "p2p" and state.migration is None and state.failed_migrations == 1
    # Everybody is back on the old path alone: the SFU sessions they opened are dropped.
    for x in (a, b):

        def alone_on_p2p(x: CallClient = x) -> bool:
            return not x.sfu_live and x.mode == "p2p"

        await eventually(alone_on_p2p, 10)
    assert a.links and b.links
    await c.leave()
    stack.add("selector")
