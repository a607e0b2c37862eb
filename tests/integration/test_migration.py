"""Live P2P <-> SFU migration through real processes: two gateways, a mode selector, a media
node, nats-server, and aiortc clients sending audio and video."""

import asyncio
import time
from collections.abc import Iterator
from typing import TypeVar

import httpx
import msgspec
import pytest
from nats.aio.subscription import Subscription

from gateway import migration
from schemas import subjects
from schemas.bus import Bus, Incoming, RpcFailure
from schemas.call_commands import AnyCallCommand, MigrateToSfu
from schemas.call_events import AnyCallEvent, CallModeChanged, MigrationStarted
from schemas.call_state import ActiveCallClaim, CallState
from schemas.codec import decode
from schemas.kv import TypedKv
from schemas.media import (
    LeasesRenewed,
    OpenSession,
    RenewLeases,
    SessionOpened,
)
from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack
from tests.support.crashing_store import CrashingStore
from tests.support.nats_server import NatsServer
from tests.support.samples import idle_node_heartbeat
from tests.support.waiting import Collector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer) -> Iterator[CallStack]:
    calls = CallStack(nats_server.url, gateways=2, selectors=1, media_nodes=1).start_all()
    yield calls
    calls.stop()


COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (200, 40, 200)]


async def people(stack: CallStack, uid: str, n: int, clients: list[CallClient]) -> list[CallClient]:
    made = []
    for i in range(n):
        user = f"u{i}-{uid}"
        url = stack.urls[i % len(stack.urls)]
        client = await CallClient.connect(
            url, stack.token(user, f"P{i}"), name=f"p{i}", colour=COLOURS[i], heartbeats=True
        )
        made.append(client)
    clients += made
    return made


async def replay_call(bus: Bus, call_id: str) -> list[AnyCallEvent]:
    """Every event of a call kept in ``CALL_EVENTS``, in stream order."""
    sub = await bus.js.subscribe(
        subjects.call_events_of(call_id), stream=subjects.CALL_EVENTS_STREAM, ordered_consumer=True
    )
    events: list[AnyCallEvent] = []
    try:
        pending = (await bus.js.stream_info(subjects.CALL_EVENTS_STREAM)).state.messages
        while pending:
            msg = await sub.next_msg(timeout=2)
            events.append(decode(msg.data, AnyCallEvent))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return events


E = TypeVar("E")


class Modes(Collector[AnyCallEvent]):
    """A call's events as a plain subscriber sees them, read as a consumer should: once
    per revision (every writer of a call publishes its whole pending outbox, so a plain
    subscription may see an event twice; the stream keeps it once)."""

    def of(self, kind: type[E]) -> list[E]:
        seen: set[int] = set()
        out: list[E] = []
        for e in self.items:
            if isinstance(e, kind) and e.seq not in seen:
                seen.add(e.seq)
                out.append(e)
        return out

    def completed(self) -> list[CallModeChanged]:
        return [e for e in self.of(CallModeChanged) if e.outcome == "completed"]


async def test_group_grows_to_sfu_and_shrinks_back_to_p2p_with_media_at_every_step(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    conv = f"grp-{uid}"
    members = [f"u{i}-{uid}" for i in range(5)]
    stack.put_conversation(conv, "GROUP", members)
    a, b, c, d = await people(stack, uid, 4, clients)

    started = await a.initiate(conv)
    call_id = started["call"]["callId"]
    log = Modes()
    await bus.subscribe(subjects.call_events_of(call_id), AnyCallEvent, log)
    await bus.flush()
    await b.accept(call_id)
    t = time.monotonic()
    for x in (a, b):
        await x.wait_everyone(t, "p2p")

    # 2 -> 3: the selector moves the call to the SFU; everyone gets everyone through it.
    t = time.monotonic()
    await c.join(call_id)
    await log.wait(lambda _: bool(log.completed()), 30)
    for x in (a, b, c):
        await x.wait_everyone(t, "sfu")
        await x.wait_mode("sfu")  # the P2P links went once the SFU carried media

    # 3 -> 4: the newcomer is attached to the SFU, no migration.
    t = time.monotonic()
    await d.join(call_id)
    for x in (a, b, c, d):
        await x.wait_everyone(t, "sfu")

    # 4 -> 3: stays on the SFU (and media keeps flowing).
    await d.leave()
    t = time.monotonic()
    for x in (a, b, c):
        await x.wait_everyone(t, "sfu")

    # 3 -> 2: after the hold, back to P2P, make-before-break.
    await c.leave()
    t = time.monotonic()
    await log.wait(lambda _: len(log.completed()) >= 2, 30)
    for x in (a, b):
        await x.wait_everyone(t, "p2p")
        await x.wait_mode("p2p")

    started_events = log.of(MigrationStarted)
    changes = [e for e in log.of(CallModeChanged)]
    assert [(e.from_mode, e.to_mode, e.epoch) for e in started_events] == [
        ("p2p", "sfu", 1),
        ("sfu", "p2p", 2),
    ]
    assert [(e.to_mode, e.outcome, e.epoch) for e in changes] == [
        ("sfu", "completed", 1),
        ("p2p", "completed", 2),
    ]
    # Replayed from the stream, the call's events are its revisions 1, 2, 3 ... in order.
    replay = await replay_call(bus, call_id)
    assert [e.seq for e in replay if e.seq] == list(range(1, len([e for e in replay if e.seq]) + 1))
    assert not stack.tracebacks(), stack.logs()


async def test_direct_stays_p2p_refuses_a_third_and_falls_back_to_the_sfu_when_cut(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    conv = f"dm-{uid}"
    stack.put_conversation(conv, "DIRECT", [f"u0-{uid}", f"u1-{uid}"])
    a, b, c = await people(stack, uid, 3, clients)
    call_id = (await a.initiate(conv))["call"]["callId"]
    log = Modes()
    await bus.subscribe(subjects.call_events_of(call_id), AnyCallEvent, log)
    await bus.flush()
    await b.accept(call_id)
    t = time.monotonic()
    for x in (a, b):
        await x.wait_everyone(t, "p2p")
    refused = await c.request("call:join", {"callId": call_id})
    assert refused["ok"] is False and refused["error"]["code"] == "forbidden"

    # The direct path stops carrying media (packets lost both ways): the clients say so,
    # the call moves to the SFU and both keep talking.
    a.cut_p2p()
    b.cut_p2p()
    t = time.monotonic()
    await log.wait(lambda _: bool(log.completed()), 30)
    for x in (a, b):
        await x.wait_everyone(t, "sfu")
        await x.wait_mode("sfu")
    changed = log.of(CallModeChanged)[0]
    assert (changed.to_mode, changed.reason) == ("sfu", "p2p_media_failed")
    # It stays on the SFU for the rest of the call (two people and DIRECT notwithstanding).
    state = await stack_state(bus, call_id)
    assert state.mode == "sfu" and state.p2p_failed


async def stack_state(bus: Bus, call_id: str) -> CallState:
    kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    entry = await kv.get(call_id)
    assert entry is not None
    return entry.value


async def test_three_already_in_when_media_starts_begin_on_the_sfu(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    conv = f"grp3-{uid}"
    stack.put_conversation(conv, "GROUP", [f"u{i}-{uid}" for i in range(3)])
    a, b, c = await people(stack, uid, 3, clients)
    # Everyone is in the call (as the messenger's REST calls do) before any media starts.
    async with httpx.AsyncClient(base_url=stack.urls[0]) as http:
        started = await http.post(
            "/api/calls",
            json={"conversationId": conv},
            headers={"Authorization": f"Bearer {a.token}"},
        )
        call_id = started.json()["call"]["callId"]
        for x in (b, c):
            joined = await http.post(
                f"/api/calls/{call_id}/participants", headers={"Authorization": f"Bearer {x.token}"}
            )
            assert joined.status_code == 201, joined.text
    t = time.monotonic()
    for x in (a, b, c):
        await x.join(call_id)
    for x in (a, b, c):
        await x.wait_everyone(t, "sfu")
        await x.wait_mode("sfu")
        assert x.p2p_links_made == 0


async def test_two_selectors_never_double_migrate(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    second = stack.add("selector")
    try:
        conv = f"sel-{uid}"
        stack.put_conversation(conv, "GROUP", [f"u{i}-{uid}" for i in range(3)])
        a, b, c = await people(stack, uid, 3, clients)
        call_id = (await a.initiate(conv))["call"]["callId"]
        await b.accept(call_id)
        t = time.monotonic()
        await a.wait_everyone(t, "p2p")
        await c.join(call_id)
        for x in (a, b, c):
            await x.wait_mode("sfu")
        await c.leave()
        for x in (a, b):
            await x.wait_mode("p2p")
        replay = await replay_call(bus, call_id)
        starts = [e for e in replay if isinstance(e, MigrationStarted)]
        ends = [e for e in replay if isinstance(e, CallModeChanged)]
        assert [(e.to_mode, e.epoch) for e in starts] == [("sfu", 1), ("p2p", 2)]
        assert [(e.to_mode, e.epoch, e.outcome) for e in ends] == [
            ("sfu", 1, "completed"),
            ("p2p", 2, "completed"),
        ]
    finally:
        stack.kill_service(second.service_id)


class RefusingNode:
    """A media node that announces plenty of room and refuses every session (a node that is
    broken, or full in a way its reports do not show yet). Like a real node it answers the
    selector's liveness probes (``renew_leases``) while it is up: without that, a heartbeat
    late by a few hundred ms on a busy machine gets it declared dead (``node_unavailable``)
    before its refusal is heard."""

    def __init__(self, bus: Bus, node_id: str) -> None:
        self.bus = bus
        self.node_id = node_id
        self.refused = 0
        self._beating: asyncio.Task[None] | None = None
        self._served: list[Subscription] = []

    async def start(self) -> None:
        async def refuse(request: OpenSession, _: Incoming) -> SessionOpened:
            self.refused += 1
            raise RpcFailure("unavailable", "this media node is full")

        async def renew(request: RenewLeases, _: Incoming) -> LeasesRenewed:
            return LeasesRenewed(node_id=self.node_id, renewed=[], unknown=request.session_ids)

        self._served = [
            await self.bus.serve(
                subjects.media_rpc(self.node_id, OpenSession.verb), OpenSession, refuse
            ),
            await self.bus.serve(
                subjects.media_rpc(self.node_id, RenewLeases.verb), RenewLeases, renew
            ),
        ]

        roomy = msgspec.structs.replace(
            idle_node_heartbeat(self.node_id),
            capacity=1000,
            free=1000,
            cpu_percent=0.0,
            cpu_count=64,
        )

        async def beat() -> None:
            while True:
                await self.bus.publish(subjects.MEDIA_NODE_HEARTBEAT, roomy)
                await asyncio.sleep(0.3)

        self._beating = asyncio.get_running_loop().create_task(beat())
        await asyncio.sleep(0)

    async def stop_reporting(self) -> None:
        """Go away as a crashed node does: no heartbeats, nobody answering its subjects."""
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
        for sub in self._served:
            await sub.unsubscribe()
        self._served = []


async def test_a_node_that_refuses_leaves_the_call_on_p2p_then_a_retry_places_it(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    refuser = RefusingNode(bus, f"refuser-{uid}")
    await refuser.start()
    try:
        conv = f"ref-{uid}"
        stack.put_conversation(conv, "GROUP", [f"u{i}-{uid}" for i in range(3)])
        a, b, c = await people(stack, uid, 3, clients)
        call_id = (await a.initiate(conv))["call"]["callId"]
        log = Modes()
        await bus.subscribe(subjects.call_events_of(call_id), AnyCallEvent, log)
        await bus.flush()
        await b.accept(call_id)
        t = time.monotonic()
        await a.wait_everyone(t, "p2p")
        await c.join(call_id)
        await log.wait(lambda _: bool(log.of(CallModeChanged)), 30)
        failed = log.of(CallModeChanged)[0]
        assert (failed.outcome, failed.reason, failed.node_id) == (
            "failed",
            "node_refused",
            refuser.node_id,
        )
        assert refuser.refused >= 1
        # Nobody was left without media: the call stays P2P and the newcomer gets the mesh.
        t = time.monotonic()
        for x in (a, b, c):
            await x.wait_everyone(t, "p2p")
            assert x.mode == "p2p"
    finally:
        await refuser.stop_reporting()
    # The refusing node stops reporting: the retry goes to the real node and completes.
    await log.wait(lambda _: bool(log.completed()), 30)
    done = log.completed()[0]
    assert done.reason == "retry" and done.node_id != refuser.node_id
    for x in (a, b, c):
        await x.wait_mode("sfu")


async def test_a_crash_between_compare_and_set_and_publish_loses_no_event_notice_or_command(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    """A selector wins its compare-and-set for a migration, then dies before publishing:
    the gateways' sweepers publish its event and command from the outbox, once."""
    selectors = stack.of_kind("selector")
    for s in selectors:
        stack.kill_service(s.service_id)
    try:
        conv = f"crash-{uid}"
        stack.put_conversation(conv, "GROUP", [f"u{i}-{uid}" for i in range(3)])
        a, b, c = await people(stack, uid, 3, clients)
        call_id = (await a.initiate(conv))["call"]["callId"]
        await b.accept(call_id)
        t = time.monotonic()
        await a.wait_everyone(t, "p2p")
        await c.join(call_id)  # nobody decides: no selector runs
        commands: Collector[AnyCallCommand] = Collector()
        await bus.subscribe(subjects.call_commands_of(call_id), AnyCallCommand, commands)
        await bus.flush()

        crashing = CrashingStore(
            bus,
            await bus.kv(subjects.CALLS_BUCKET, CallState),
            await bus.kv(subjects.CALL_CLAIMS_BUCKET, ActiveCallClaim),
        )
        node = stack.of_kind("media_node")[0].service_id
        written = await crashing.apply(
            call_id,
            lambda s: migration.start(
                s,
                to_mode="sfu",
                reason="participant_count",
                now=time.time(),
                deadline_s=15,
                node_id=node,
            ),
        )
        assert written is not None
        notices = [
            x.wait_for("call:migration-started", lambda p: p["callId"] == call_id, timeout=20)
            for x in (a, b, c)
        ]
        await asyncio.gather(*notices)
        await commands.wait(lambda items: any(isinstance(i, MigrateToSfu) for i in items), 20)
        for x in (a, b, c):
            await x.wait_mode("sfu")  # the reports of the clients complete it
    finally:
        for _ in selectors:
            stack.add("selector")
    replay = await replay_call(bus, call_id)
    assert [e.epoch for e in replay if isinstance(e, MigrationStarted)] == [1]
    assert [e.seq for e in replay if e.seq] == list(range(1, len([e for e in replay if e.seq]) + 1))
    assert all(len(x.seen("call:migration-started")) == 1 for x in (a, b, c))
