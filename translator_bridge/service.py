"""The translator bridge service process."""

import asyncio
from typing import Any

from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.call_state import CallState
from schemas.captions import Caption, TranscriptSegment
from schemas.logs import get_logger
from schemas.runtime import Service
from translator_bridge.adapters import CachingTranslator, GuardedTranslator, TextTranslator
from translator_bridge.apertium import ApertiumTranslator
from translator_bridge.bridge import CaptionBridge
from translator_bridge.libretranslate import LibreTranslateTranslator
from translator_bridge.readers import CallReaders
from translator_bridge.settings import TranslatorBridgeSettings
from translator_bridge.translator import Translator

log = get_logger("translator_bridge")


def build_translator(settings: TranslatorBridgeSettings) -> tuple[Translator, TextTranslator]:
    """(the backend, the backend behind its guard and cache) for these settings."""
    backend: Translator
    if settings.translator_backend == "libretranslate":
        backend = LibreTranslateTranslator(
            settings.translator_url,
            api_key=settings.translator_api_key,
            timeout_s=settings.translator_timeout_s,
            max_hops=settings.translator_max_hops,
            refresh_s=settings.translator_refresh_s,
        )
    else:
        backend = ApertiumTranslator(
            settings.translator_url,
            timeout_s=settings.translator_timeout_s,
            max_hops=settings.translator_max_hops,
            refresh_s=settings.translator_refresh_s,
        )
    guarded = GuardedTranslator(
        backend,
        concurrency=settings.translator_concurrency,
        timeout_s=settings.translator_timeout_s,
    )
    return backend, CachingTranslator(guarded, size=settings.translator_cache_size)


class TranslatorBridgeService(Service[TranslatorBridgeSettings]):
    """Segments in (queue group), captions out; see :mod:`translator_bridge.bridge`."""

    kind = "translator_bridge"

    async def start(self, bus: Bus) -> None:
        self.bus = bus
        settings = self.settings
        self.backend, self.translator = build_translator(settings)
        # A backend that is down does not stop the bridge: captions go out untranslated
        # (marked backend_failed) until it answers; the heartbeat says translator_known=0.
        await self.translator.start()
        self.readers = CallReaders(await bus.js.key_value(subjects.CALLS_BUCKET))
        await self.readers.start()

        async def publish(caption: Caption) -> None:
            await bus.publish(subjects.caption(caption.call_id, caption.language), caption)

        self.bridge = CaptionBridge(
            translator=self.translator, lookup=self._lookup, publish=publish
        )
        self._slots = asyncio.Semaphore(settings.translator_bridge_max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub = await bus.subscribe(
            subjects.ALL_TRANSCRIPT_SEGMENTS,
            TranscriptSegment,
            self._on_segment,
            queue=settings.translator_bridge_queue,
        )
        log.info(
            "bridge.started",
            backend=self.backend.name,
            pairs=len(self.backend.capabilities.pairs),
            translator_known=self.backend.known,
        )

    async def _lookup(self, call_id: str) -> CallState | None:
        return await self.readers.get(call_id)

    async def _on_segment(self, segment: TranscriptSegment, _: Incoming) -> None:
        # nats-py hands a subscription's messages over one at a time: handle each in its
        # own task (bounded) so one slow translation does not hold up every other call.
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(segment), name="segment")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, segment: TranscriptSegment) -> None:
        try:
            with self.in_flight:
                await self.bridge.handle(segment)
        except Exception as exc:
            log.exception(
                "bridge.segment_failed", call_id=segment.call_id, error=type(exc).__name__
            )
        finally:
            self._slots.release()

    async def stop_accepting(self) -> None:
        await super().stop_accepting()
        if hasattr(self, "_sub"):
            await self._sub.unsubscribe()

    async def wait_idle(self) -> None:
        if getattr(self, "_tasks", None):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().wait_idle()

    async def close(self) -> None:
        if hasattr(self, "readers"):
            await self.readers.stop()
        if hasattr(self, "translator"):
            await self.translator.close()

    def load_extra(self) -> dict[str, float]:
        if not hasattr(self, "bridge"):
            return {}
        extra: dict[str, Any] = self.bridge.stats.as_gauges()
        extra["translator_known"] = 1.0 if self.backend.known else 0.0
        extra["translator_pairs"] = float(len(self.backend.capabilities.pairs))
        cache = self.translator
        if isinstance(cache, CachingTranslator):
            extra["cache_hits"] = float(cache.hits)
            extra["cache_misses"] = float(cache.misses)
        extra["calls_known"] = float(len(self.readers.calls))
        return {k: float(v) for k, v in extra.items()}
