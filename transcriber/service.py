"""The transcriber service process: load the models, then pull and transcribe chunks."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from schemas.bus import Bus
from schemas.logs import get_logger
from schemas.runtime import Service
from transcriber.engine import SpeechToText
from transcriber.models import resolve
from transcriber.router import LanguageRouter, ModelPlan
from transcriber.settings import TranscriberSettings
from transcriber.whisper import WhisperEngine, WindowPolicy
from transcriber.worker import TranscriberWorker, WorkerConfig

log = get_logger("transcriber")


def build_engine(settings: TranscriberSettings) -> LanguageRouter:
    """The engines the settings name, resolved (the base model is assembled if needed)
    but not loaded. Blocking: call from a thread."""
    window = WindowPolicy(
        trimmed=settings.whisper_window == "trimmed",
        pad_s=settings.whisper_window_pad_s,
        base_tokens=settings.whisper_budget_base_tokens,
        tokens_per_s=settings.whisper_budget_tokens_per_s,
    )
    cache = Path(settings.whisper_cache_dir)

    def engine_for(model: str) -> SpeechToText:
        source = resolve(model, cache)
        return WhisperEngine(
            name=source.name,
            folder=source.folder,
            device=settings.whisper_device,
            compute_type=settings.whisper_compute_type,
            cpu_threads=settings.whisper_cpu_threads,
            window=window,
        )

    return LanguageRouter(ModelPlan.parse(settings.transcriber_models), engine_for)


class TranscriberService(Service[TranscriberSettings]):
    """Loads every model once (ready only after), then runs one :class:`TranscriberWorker`."""

    kind = "transcriber"

    def __init__(self, settings: TranscriberSettings, service_id: str) -> None:
        super().__init__(settings, service_id)
        # One thread: the models run one batch at a time (each uses its own CPU threads).
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self.engine: LanguageRouter | None = None
        self.worker: TranscriberWorker | None = None
        self.load_s = 0.0

    async def start(self, bus: Bus) -> None:
        self.bus = bus
        loop = asyncio.get_running_loop()
        started = time.perf_counter()

        def load() -> LanguageRouter:
            engine = build_engine(self.settings)
            engine.load()
            return engine

        self.engine = await loop.run_in_executor(self.executor, load)
        self.load_s = time.perf_counter() - started
        log.info(
            "transcriber.models_loaded",
            models={m: e.name for m, e in self.engine.engines.items()},
            languages=len(self.engine.capabilities.languages),
            load_s=round(self.load_s, 3),
        )
        s = self.settings
        self.worker = TranscriberWorker(
            bus=bus,
            engine=self.engine,
            executor=self.executor,
            config=WorkerConfig(
                durable=s.transcriber_queue,
                batch_size=s.transcriber_batch_size,
                ack_wait_s=s.transcriber_ack_wait_s,
                max_deliver=s.transcriber_max_deliver,
                stop_timeout_s=s.drain_timeout_s,
            ),
            service_id=self.service_id,
            in_flight=self.in_flight,
        )
        await self.worker.start()

    async def stop_accepting(self) -> None:
        await super().stop_accepting()
        if self.worker is not None:
            await self.worker.stop()

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.worker is not None and self.worker.abandoned_batch:
            self.abandoned_threads = True
            log.warning("transcriber.engine_wedged_at_exit")

    def load_extra(self) -> dict[str, float]:
        extra = {"models_load_s": round(self.load_s, 3)}
        if self.worker is not None:
            extra.update(self.worker.stats.as_gauges())
        return extra
