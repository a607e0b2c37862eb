"""Per-key serial work, keys in parallel: one slow call never stalls the others (used by
the mode selector and by each gateway's media coordinator).

:meth:`Lanes.request` returns once a run of ``work(key)`` that *started after the request*
has finished (so it has seen whatever caused the request). Requests for a key that is
already running are coalesced into its next run; at most ``limit`` keys run at once.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class _Lane:
    waiting: list[asyncio.Future[None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class Lanes:
    def __init__(self, work: Callable[[str], Awaitable[None]], *, limit: int) -> None:
        self._work = work
        self._lanes: dict[str, _Lane] = {}
        self._slots = asyncio.Semaphore(limit)
        self.runs = 0

    @property
    def busy(self) -> int:
        return len(self._lanes)

    async def request(self, key: str) -> None:
        """Run ``work(key)`` (or join the next run); raises what that run raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            lane.waiting.append(future)
            lane.task = asyncio.get_running_loop().create_task(self._drive(key, lane))
        else:
            lane.waiting.append(future)
        await future

    async def _drive(self, key: str, lane: _Lane) -> None:
        try:
            async with self._slots:
                while lane.waiting:
                    batch, lane.waiting = lane.waiting, []
                    error: BaseException | None = None
                    try:
                        self.runs += 1
                        await self._work(key)
                    except Exception as exc:
                        error = exc
                    for future in batch:
                        if future.done():
                            continue
                        if error is None:
                            future.set_result(None)
                        else:
                            future.set_exception(error)
        finally:
            self._lanes.pop(key, None)
            for future in lane.waiting:  # cancelled while waiting for a slot
                if not future.done():
                    future.cancel()

    async def close(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
