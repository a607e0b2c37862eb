"""Waiting for a condition with a deadline, never for a fixed time.

:func:`until` re-checks a predicate each time an :class:`asyncio.Event` is set by whatever
changes the state; :func:`eventually` polls a condition nothing signals (a KV entry, two
counters). Both raise ``TimeoutError`` when the deadline passes.
"""

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from schemas.bus import Incoming

T = TypeVar("T")


async def until(predicate: Callable[[], bool], changed: asyncio.Event, timeout: float) -> None:
    """Return once ``predicate()`` holds, re-checking whenever ``changed`` is set."""

    async def loop() -> None:
        while not predicate():
            changed.clear()
            await changed.wait()

    await asyncio.wait_for(loop(), timeout)


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, step: float = 0.02
) -> None:
    """Return once ``predicate()`` (sync or async) holds, checking every ``step`` seconds."""

    async def holds() -> bool:
        result = predicate()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    async def loop() -> None:
        while not await holds():
            await asyncio.sleep(step)

    await asyncio.wait_for(loop(), timeout)


class Collector(Generic[T]):
    """A bus handler that keeps what it receives; wait for a count or a condition."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.changed = asyncio.Event()

    async def __call__(self, item: T, _: Incoming) -> None:
        self.items.append(item)
        self.changed.set()

    async def wait(self, predicate: Callable[[list[T]], bool], timeout: float) -> None:
        await until(lambda: predicate(self.items), self.changed, timeout)

    async def wait_count(self, n: int, timeout: float = 5.0) -> list[T]:
        """At least ``n`` items; returns them all."""
        await self.wait(lambda items: len(items) >= n, timeout)
        return self.items
