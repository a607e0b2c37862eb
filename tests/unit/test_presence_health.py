"""Stale heartbeats count only for the time heartbeats could be handled
(gateway/presence_health.py)."""

import asyncio
from typing import Any

import pytest

from gateway import state_machine as sm
from gateway.errors import CallError
from gateway.presence import PresenceWriter
from gateway.presence_health import PresenceHealth, vouched
from gateway.state_machine import apply_due
from gateway.tokens import Principal
from schemas.call_state import CallState, ConversationMember, ConversationRecord

T0 = 1_000.0


@pytest.fixture
def call_state() -> CallState:
    """An active DIRECT call of two, both last seen at T0."""
    conv = ConversationRecord(
        conversation_id="dm",
        type="DIRECT",
        members=[ConversationMember(user_id=u) for u in ("a", "b")],
    )
    timers = sm.Timers(
        ring_timeout_s=30, heartbeat_timeout_s=4, reconnect_grace_s=10, max_duration_s=3600
    )
    state = sm.start_call(
        call_id="call-1",
        conversation=conv,
        initiator=Principal("a", "user"),
        participant_id="p-a",
        media="audio",
        now=T0,
        timers=timers,
        resume_token="ta",
    ).state
    return sm.join(
        state,
        Principal("b", "user"),
        participant_id="p-b",
        now=T0,
        resume_token="tb",
        max_participants=50,
        may_join=True,
    ).state


class Clock:
    def __init__(self, at: float = 1000.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def run(
    health: PresenceHealth,
    clock: "Clock",
    seconds: float,
    exc: BaseException | None = None,
    *,
    proves: bool = True,
) -> None:
    """One operation that takes ``seconds`` and ends with ``exc`` (or succeeds)."""
    try:
        with health.watch(proves=proves):
            clock.at += seconds
            if exc is not None:
                raise exc
    except BaseException as caught:
        assert caught is exc


def test_prompt_operations_leave_no_outage() -> None:
    clock = Clock()
    health = PresenceHealth(clock)
    for _ in range(5):
        run(health, clock, 0.2)
    assert health.outage_within(0, clock.at) == 0.0


def test_an_outage_runs_from_a_failed_write_to_the_next_prompt_one() -> None:
    clock = Clock(1000.0)
    health = PresenceHealth(clock)
    run(health, clock, 1.0, TimeoutError())  # started at 1000
    clock.at = 1005.0
    assert health.outage_within(990, clock.at) == 5.0  # still on
    run(health, clock, 0.1, proves=False)  # a throttled heartbeat proves nothing
    clock.at = 1008.0
    run(health, clock, 0.1)  # a write went through: over at 1008.1
    clock.at = 1100.0
    assert health.outage_within(990, 1100) == pytest.approx(8.1)
    assert health.outage_within(1004, 1100) == pytest.approx(4.1)  # only since then
    assert health.outage_within(1009, 1100) == 0.0


def test_an_operation_hanging_past_the_threshold_counts_from_its_start() -> None:
    clock = Clock(1000.0)
    health = PresenceHealth(clock, slow_s=3.0)
    token = health.started()
    clock.at = 1002.0
    assert health.outage_within(990, clock.at) == 0.0  # not slow yet
    clock.at = 1010.0
    assert health.outage_within(990, clock.at) == 10.0
    health.ended(token, ok=True)  # answered late: the span stays on record
    clock.at = 1050.0
    assert health.outage_within(990, clock.at) == 10.0


def test_an_abandoned_operation_counts_only_if_it_hung() -> None:
    clock = Clock(1000.0)
    health = PresenceHealth(clock, slow_s=3.0)
    health.dropped(health.started())
    t = health.started()
    clock.at = 1005.0
    health.dropped(t)
    assert health.outage_within(990, 1100) == 5.0


def test_only_the_bus_not_answering_is_an_outage() -> None:
    clock = Clock(1000.0)
    health = PresenceHealth(clock)
    run(health, clock, 0.1, ValueError("an undecodable entry"))
    run(health, clock, 0.1, CallError("not_in_call", "not in the call"))
    clock.at += 10
    assert health.outage_within(990, clock.at) == 0.0
    run(health, clock, 0.1, CallError("unavailable", "try again"))
    clock.at += 10
    assert health.outage_within(990, clock.at) > 9.0


def test_no_operation_is_left_in_hand_by_an_exit() -> None:
    clock = Clock()
    health = PresenceHealth(clock, slow_s=1.0)
    for exc in (KeyboardInterrupt(), GeneratorExit(), asyncio.CancelledError()):
        run(health, clock, 0.1, exc)
    clock.at += 100
    assert health.outage_within(0, clock.at) == 0.0


def test_overlapping_outages_count_once() -> None:
    clock = Clock(1000.0)
    health = PresenceHealth(clock, slow_s=1.0)
    a = health.started()
    clock.at = 1002.0
    b = health.started()
    clock.at = 1004.0
    health.ended(a, ok=True)  # 1000..1004
    clock.at = 1006.0
    health.ended(b, ok=True)  # 1002..1006
    assert health.outage_within(990, 1100) == 6.0


def test_nobody_times_out_while_heartbeats_cannot_be_handled(call_state: CallState) -> None:
    """Stale heartbeats, and the sweeper's decision: nobody leaves during the outage, and
    they leave once silent a whole timeout *outside* it."""
    timeout = call_state.heartbeat_timeout_s  # 4 s
    clock = Clock(T0 + 1)
    health = PresenceHealth(clock)
    run(health, clock, 0.5, TimeoutError())  # the bus stops answering at T0 + 1
    now = T0 + 30
    clock.at = now
    assert apply_due(call_state, now=now, presence=vouched(call_state, {}, health, now)) is None
    run(health, clock, 0.1)  # back at T0 + 30.1
    later = now + timeout - 1.5  # 1 s before the outage + T0's 1 s is used up
    still = vouched(call_state, {}, health, later)
    assert apply_due(call_state, now=later, presence=still) is None
    gone_at = now + timeout + 0.5
    gone = apply_due(call_state, now=gone_at, presence=vouched(call_state, {}, health, gone_at))
    assert gone is not None and gone.state.status == "ended"


def test_slowness_under_load_delays_a_sweep_by_about_as_long(call_state: CallState) -> None:
    """An operation of 3.5 s every 5 s (past the threshold each time): a participant gone
    since T0 is swept after about timeout / (1 - 3.5 / 5), not never."""
    clock = Clock(T0)
    health = PresenceHealth(clock, slow_s=3.0)
    swept_at = None
    while clock.at < T0 + 120 and swept_at is None:
        run(health, clock, 3.5)
        clock.at += 1.5
        out = apply_due(
            call_state, now=clock.at, presence=vouched(call_state, {}, health, clock.at)
        )
        if out is not None and out.state.status == "ended":
            swept_at = clock.at
    assert swept_at is not None
    assert swept_at - T0 <= call_state.heartbeat_timeout_s / (1 - 3.5 / 5) + 5


class FailingKv:
    def __init__(self) -> None:
        self.fail = True
        self.puts = 0

    async def put(self, key: str, value: Any) -> int:
        self.puts += 1
        if self.fail:
            raise TimeoutError("bucket electing a leader")
        return 1


async def test_a_failed_heartbeat_starts_an_outage_and_is_not_throttled(
    call_state: CallState,
) -> None:
    clock = Clock(T0)
    kv = FailingKv()
    writer = PresenceWriter(kv, "gw-1", clock=clock)  # type: ignore[arg-type]
    pid = call_state.participants[0].participant_id
    with pytest.raises(TimeoutError):
        await writer.beat(call_state, pid)
    clock.at += 5
    assert writer.health.outage_within(T0 - 1, clock.at) == 5.0
    kv.fail = False
    assert await writer.beat(call_state, pid)  # at once: the failed one did not count
    assert kv.puts == 2
    clock.at += 50
    assert writer.health.outage_within(T0 - 1, clock.at) == 5.0  # over


async def test_one_heartbeat_write_per_participant_at_a_time(call_state: CallState) -> None:
    release = asyncio.Event()

    class SlowKv:
        puts = 0

        async def put(self, key: str, value: Any) -> int:
            SlowKv.puts += 1
            await release.wait()
            return 1

    clock = Clock(T0)
    writer = PresenceWriter(SlowKv(), "gw-1", clock=clock)  # type: ignore[arg-type]
    pid = call_state.participants[0].participant_id
    first = asyncio.create_task(writer.beat(call_state, pid))
    await asyncio.sleep(0)
    clock.at += 10  # well past the throttle
    assert not await writer.beat(call_state, pid)  # the first is still being written
    release.set()
    assert await first and SlowKv.puts == 1


async def test_a_heartbeat_cancelled_with_its_socket_starts_no_outage(
    call_state: CallState,
) -> None:
    class HangingKv:
        async def put(self, key: str, value: Any) -> int:
            await asyncio.Event().wait()
            return 1

    clock = Clock(T0)
    writer = PresenceWriter(HangingKv(), "gw-1", clock=clock)  # type: ignore[arg-type]
    task = asyncio.create_task(writer.beat(call_state, call_state.participants[0].participant_id))
    await asyncio.sleep(0)
    assert writer.health.outage_within(T0, T0 + 60) > 0  # in hand: counted if it hangs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writer.health.outage_within(T0 - 1, T0 + 60) == 0.0
