"""Per-call lanes: coalescing, errors, and the trace (context) each run continues.

A run serves the requests that arrived while the previous run was busy, so it must run in
the context of one of *those* requests: run in the context of the lane's first request, a
reconcile caused by a migration command is traced to an unrelated earlier event.
"""

import asyncio
import contextvars
from typing import Any

import pytest

from gateway.lanes import Lanes
from gateway.selector.placement import NodeTable
from gateway.selector.rules import Rules
from gateway.selector.service import ModeSelector

cause: contextvars.ContextVar[str] = contextvars.ContextVar("cause", default="none")


def in_context(value: str, coro: Any) -> "asyncio.Task[Any]":
    """Start ``coro`` as a task whose ``cause`` is ``value`` (as a traced handler would)."""
    context = contextvars.copy_context()
    context.run(cause.set, value)
    return asyncio.get_running_loop().create_task(coro, context=context)


async def test_a_request_coalesced_into_the_next_run_is_served_in_its_own_context() -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def work(key: str) -> None:
        seen.append(cause.get())
        if len(seen) == 1:
            await release.wait()

    lanes = Lanes(work, limit=4)
    first = in_context("join", lanes.request("c1"))
    await asyncio.wait_for(_until(lambda: len(seen) == 1), 5)
    # Both arrive while the first run is busy: one more run serves them, in the latest's.
    second = in_context("event", lanes.request("c1"))
    third = in_context("command", lanes.request("c1"))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second, third), 5)
    assert seen == ["join", "command"]
    assert lanes.runs == 2 and lanes.busy == 0


async def test_a_failed_run_fails_every_request_it_served_and_the_lane_goes_on() -> None:
    release = asyncio.Event()
    runs = 0

    async def work(key: str) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await release.wait()
        if runs == 2:
            raise RuntimeError("boom")

    lanes = Lanes(work, limit=4)
    first = asyncio.ensure_future(lanes.request("c1"))
    await asyncio.wait_for(_until(lambda: runs == 1), 5)
    second = asyncio.ensure_future(lanes.request("c1"))
    third = asyncio.ensure_future(lanes.request("c1"))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(first, 5)
    for failed in (second, third):
        with pytest.raises(RuntimeError, match="boom"):
            await asyncio.wait_for(failed, 5)
    await asyncio.wait_for(lanes.request("c1"), 5)
    assert runs == 3


async def test_closing_the_lanes_cancels_the_run_in_hand() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def work(key: str) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    lanes = Lanes(work, limit=1)
    waiter = asyncio.ensure_future(lanes.request("c1"))
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(lanes.close(), 5)
    assert cancelled.is_set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)


class _RecordingStore:
    """A call store that records the context each decision ran in and changes nothing."""

    def __init__(self) -> None:
        self.causes: list[str] = []

    async def apply(self, call_id: str, transition: Any) -> None:
        self.causes.append(cause.get())


async def test_a_decision_woken_later_continues_the_trace_of_what_asked_for_it() -> None:
    store = _RecordingStore()
    clock = [100.0]
    selector = ModeSelector(
        store,  # type: ignore[arg-type]
        NodeTable(6.0, started_at=0.0),
        Rules(),
        concurrency=4,
        clock=lambda: clock[0],
    )
    context = contextvars.copy_context()
    context.run(cause.set, "participant_left")
    context.run(selector.wake, "c1", 130.0)
    wakeups = asyncio.ensure_future(selector.run_wakeups())
    try:
        await asyncio.sleep(0)
        assert store.causes == []
        clock[0] = 130.0
        selector.wake("c2", 130.0)  # from no event at all (the periodic scan)
        await asyncio.wait_for(_until(lambda: len(store.causes) == 2), 5)
        assert sorted(store.causes) == ["none", "participant_left"]
    finally:
        wakeups.cancel()
        await asyncio.gather(wakeups, return_exceptions=True)


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)
