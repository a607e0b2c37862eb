"""Stale heartbeats count only while heartbeats could be written (gateway/presence.py)."""

import asyncio
from typing import Any

import pytest

from gateway import state_machine as sm
from gateway.presence import PresenceHealth, PresenceWriter, vouched
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


def test_heartbeats_written_before_any_trouble_count() -> None:
    health = PresenceHealth(Clock())
    assert health.trusted_since() == 0.0
    t = health.started()
    health.ended(t, ok=True)
    assert health.trusted_since() == 0.0


def test_after_a_failed_write_nothing_counts_until_one_goes_through_again() -> None:
    clock = Clock()
    health = PresenceHealth(clock)
    health.ended(health.started(), ok=False)
    assert health.trusted_since() is None
    clock.at += 7
    health.ended(health.started(), ok=True)
    assert health.trusted_since() == clock.at


def test_a_write_that_hangs_suspends_trust_and_restores_it_when_it_returns() -> None:
    clock = Clock()
    health = PresenceHealth(clock, slow_s=1.0)
    t = health.started()
    clock.at += 0.5
    assert health.trusted_since() == 0.0  # not yet slow
    clock.at += 3
    assert health.trusted_since() is None
    health.ended(t, ok=True)  # the bucket answered again, late
    assert health.trusted_since() == clock.at


def test_a_cancelled_write_says_nothing() -> None:
    clock = Clock()
    health = PresenceHealth(clock, slow_s=1.0)
    t = health.started()
    health.dropped(t)
    clock.at += 10
    assert health.trusted_since() == 0.0


def test_vouched_raises_every_last_sign_of_life_to_the_moment_trust_came_back(
    call_state: CallState,
) -> None:
    ids = [p.participant_id for p in call_state.participants]
    seen = {ids[0]: 100.0}
    assert vouched(call_state, seen, 0.0, 500.0) == {ids[0]: 100.0, ids[1]: 0.0}
    assert vouched(call_state, seen, 300.0, 500.0) == {ids[0]: 300.0, ids[1]: 300.0}
    assert vouched(call_state, seen, None, 500.0) == {ids[0]: 500.0, ids[1]: 500.0}


def test_nobody_times_out_while_heartbeats_cannot_be_written(call_state: CallState) -> None:
    """The sweeper's decision with stale heartbeats: everyone leaves if they are believed,
    nobody while writes fail, and only a timeout after writes came back."""
    timeout = call_state.heartbeat_timeout_s
    last = max(p.last_seen_at for p in call_state.participants)
    now = last + timeout * 3
    stale = {p.participant_id: last for p in call_state.participants}
    believed = apply_due(call_state, now=now, presence=vouched(call_state, stale, 0.0, now))
    assert believed is not None and believed.state.status == "ended"
    assert apply_due(call_state, now=now, presence=vouched(call_state, stale, None, now)) is None
    back = now - timeout / 2
    assert apply_due(call_state, now=now, presence=vouched(call_state, stale, back, now)) is None
    later = back + timeout
    gone = apply_due(call_state, now=later, presence=vouched(call_state, stale, back, later))
    assert gone is not None and gone.state.status == "ended"


class FailingKv:
    def __init__(self) -> None:
        self.fail = True
        self.puts = 0

    async def put(self, key: str, value: Any) -> int:
        self.puts += 1
        if self.fail:
            raise TimeoutError("bucket electing a leader")
        return 1


async def test_a_failed_heartbeat_marks_presence_unavailable_and_is_not_throttled(
    call_state: CallState,
) -> None:
    clock = Clock()
    kv = FailingKv()
    writer = PresenceWriter(kv, "gw-1", clock=clock)  # type: ignore[arg-type]
    pid = call_state.participants[0].participant_id
    with pytest.raises(TimeoutError):
        await writer.beat(call_state, pid)
    assert writer.health.trusted_since() is None
    kv.fail = False
    assert await writer.beat(call_state, pid)  # at once: the failed one did not count
    assert kv.puts == 2 and writer.health.trusted_since() == clock.at


async def test_a_heartbeat_cancelled_with_its_socket_leaves_trust_as_it_was(
    call_state: CallState,
) -> None:
    class HangingKv:
        async def put(self, key: str, value: Any) -> int:
            await asyncio.Event().wait()
            return 1

    writer = PresenceWriter(HangingKv(), "gw-1", clock=Clock())  # type: ignore[arg-type]
    task = asyncio.create_task(writer.beat(call_state, call_state.participants[0].participant_id))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writer.health.trusted_since() == 0.0
