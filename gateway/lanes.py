"""Per-key serial work, keys in parallel: one slow call never stalls the others (used by
the mode selector and by each gateway's media coordinator).

:meth:`Lanes.request` returns once a run of ``work(key)`` that *started after the request*
has finished (so it has seen whatever caused the request). Requests for a key that is
already running are coalesced into its next run; at most ``limit`` keys run at once.

Each run executes in the context (``contextvars``, so the trace) of the latest request it
serves, not of whichever request started the lane: a reconcile or a decision caused by a
migration command then continues that command's trace even when the lane was already busy
with an earlier event.
"""

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Request:
    future: asyncio.Future[None]
    context: contextvars.Context


@dataclass
class _Lane:
    waiting: list[_Request] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class Lanes:
    def __init__(self, work: Callable[[str], Coroutine[Any, Any, None]], *, limit: int) -> None:
        self._work = work
        self._lanes: dict[str, _Lane] = {}
        self._slots = asyncio.Semaphore(limit)
        self.runs = 0

    @property
    def busy(self) -> int:
        return len(self._lanes)

    async def request(self, key: str) -> None:
        """Run ``work(key)`` (or join the next run); raises what that run raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        request = _Request(future, contextvars.copy_context())
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            lane.waiting.append(request)
            lane.task = loop.create_task(self._drive(key, lane))
        else:
            lane.waiting.append(request)
        await future

    async def _drive(self, key: str, lane: _Lane) -> None:
        batch: list[_Request] = []
        try:
            async with self._slots:
                while lane.waiting:
                    batch, lane.waiting = lane.waiting, []
                    error: BaseException | None = None
                    try:
                        self.runs += 1
                        run: asyncio.Task[None] = asyncio.get_running_loop().create_task(
                            self._work(key), context=batch[-1].context
                        )
                        await run  # cancelling the lane cancels the run with it
                    except Exception as exc:
                        error = exc
                    for future in (r.future for r in batch):
                        if future.done():
                            continue
                        if error is None:
                            future.set_result(None)
                        else:
                            future.set_exception(error)
        finally:
            self._lanes.pop(key, None)
            # Cancelled (closing): the run in hand and those still waiting fail with it,
            # rather than leave their requesters waiting for ever.
            for request in [*batch, *lane.waiting]:
                if not request.future.done():
                    request.future.cancel()

    async def close(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
