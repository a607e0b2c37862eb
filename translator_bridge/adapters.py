"""Adapters that wrap one translator in another (after livekit/agents' STT adapters):

- :class:`GuardedTranslator`: at most ``concurrency`` requests at once to the backend, each
  bounded by ``timeout_s`` (a late translation of a live caption is worth little);
- :class:`CachingTranslator`: an LRU cache of translations, and one backend request for
  identical concurrent ones (a partial caption repeats the words of the previous one).

Errors pass through unchanged (they are typed :class:`TranslationError`); only successes
are cached, so a backend that comes back is used again at once.
"""

import asyncio
from collections import OrderedDict
from typing import Protocol

from translator_bridge.translator import (
    BackendFailed,
    TranslationTimeout,
    TranslatorCapabilities,
)


class TextTranslator(Protocol):
    """What the bridge needs of a translator (backends and adapters alike)."""

    name: str

    @property
    def capabilities(self) -> TranslatorCapabilities: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def translate(self, text: str, source: str, target: str) -> str: ...


class GuardedTranslator:
    """Bounded concurrency and a deadline per translation (see the module docstring)."""

    def __init__(self, inner: TextTranslator, *, concurrency: int, timeout_s: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(concurrency)
        self.timeouts = 0

    @property
    def capabilities(self) -> TranslatorCapabilities:
        return self.inner.capabilities

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def translate(self, text: str, source: str, target: str) -> str:
        try:
            # The deadline covers the wait for a slot too: a caption stuck behind a
            # backlog is as late as one stuck in the backend.
            async with asyncio.timeout(self.timeout_s):
                async with self._slots:
                    return await self.inner.translate(text, source, target)
        except TimeoutError:
            self.timeouts += 1
            raise TranslationTimeout(
                f"{self.name}: no translation within {self.timeout_s:g}s"
            ) from None


class CachingTranslator:
    """An LRU cache of (source, target, text) -> translation (see the module docstring)."""

    def __init__(self, inner: TextTranslator, *, size: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.size = size
        self._cache: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._pending: dict[tuple[str, str, str], asyncio.Future[str]] = {}
        self.hits = 0
        self.misses = 0

    @property
    def capabilities(self) -> TranslatorCapabilities:
        return self.inner.capabilities

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def translate(self, text: str, source: str, target: str) -> str:
        key = (source, target, text)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return found
        pending = self._pending.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            result = await self.inner.translate(text, source, target)
        except BaseException as exc:
            # Whoever shares this request gets the same typed error (a cancelled leader
            # is a failed backend request to them, not their own cancellation).
            shared = exc if isinstance(exc, Exception) else BackendFailed("request cancelled")
            future.set_exception(shared)
            future.exception()  # marks it retrieved: nobody else may be waiting
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(result)
        if self.size > 0:
            self._cache[key] = result
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return result
