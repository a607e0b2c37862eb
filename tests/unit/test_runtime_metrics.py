"""A service's load figures are read on the event loop; a scrape reads the last snapshot."""

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas.bus import Bus, BusStats
from schemas.metrics import REGISTRY
from schemas.runtime import Heartbeater, Service, _start_metrics
from schemas.settings import ServiceSettings


class Loaded(Service[ServiceSettings]):
    """Counts its queue; notes which threads read it."""

    kind = "transcriber"

    def __init__(self) -> None:
        super().__init__(ServiceSettings(), "loaded-1")
        self.depth = 0
        self.readers: set[str] = set()

    async def start(self, bus: Bus) -> None:
        pass

    def load_extra(self) -> dict[str, float]:
        self.readers.add(threading.current_thread().name)
        return {"queue_depth": float(self.depth)}


class _Bus:
    stats = BusStats()


def _scrape() -> float | None:
    return REGISTRY.get_sample_value("meeshy_transcriber_queue_depth")


async def test_a_scrape_never_calls_into_the_service_and_sees_the_last_beat() -> None:
    service = Loaded()
    bus: Any = _Bus()
    heart = Heartbeater(bus, service)
    service.depth = 3
    assert _start_metrics(service, bus, heart) is None  # no METRICS_PORT: nothing served
    with ThreadPoolExecutor(1, thread_name_prefix="scrape") as scraper:
        assert scraper.submit(_scrape).result() is None  # no beat yet: no figures
        heart.snapshot()  # the "starting" beat, on the loop
        assert scraper.submit(_scrape).result() == 3.0
        service.depth = 7
        assert scraper.submit(_scrape).result() == 3.0  # as of the last beat
        heart.snapshot()  # a beat, on the loop
        assert scraper.submit(_scrape).result() == 7.0
    assert service.readers == {threading.current_thread().name}
