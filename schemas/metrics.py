"""Per-service metrics, exposed for Prometheus on ``http://METRICS_HOST:METRICS_PORT/metrics``.

The service runtime (:mod:`schemas.runtime`) starts the endpoint when ``METRICS_PORT`` is
set, and exports for every service:

- ``meeshy_service_info{kind, service_id, version}`` (always 1) and ``meeshy_service_state``
  (0 starting, 1 ready, 2 draining, 3 stopped);
- ``meeshy_bus_*_total``: messages published, received, undecodable, failed handlers,
  dead-lettered, timed-out requests (from the bus counters);
- ``meeshy_rpc_errors_total{code}``: typed errors answered by this service's responders;
- ``meeshy_in_flight`` and ``meeshy_handled_total``: work in hand and done;
- ``meeshy_<kind>_<name>``: every load figure the service reports in its heartbeat
  (``Service.load_extra``, as of the last heartbeat), e.g. ``meeshy_gateway_sockets``,
  ``meeshy_media_node_forwarded_streams``, ``meeshy_media_node_tap_dropped``.

Adding a series anywhere (all names get the ``meeshy_`` prefix; the same name twice gives
back the same series, so modules may declare theirs at import time)::

    from schemas import metrics

    MODE_SWITCH = metrics.histogram(
        "mode_switch_duration_seconds", "Decision to last acknowledgement.",
        labels=("to_mode", "outcome"), buckets=metrics.LATENCY_BUCKETS,
    )
    MODE_SWITCH.labels(to_mode="sfu", outcome="completed").observe(0.42)
    metrics.counter("calls_refused_total", "Refused calls.", labels=("code",)).labels(
        code="forbidden").inc()
    metrics.sampled("queue_depth", "Chunks waiting.", lambda: float(queue.qsize()))

Recording is cheap (a lock and an add) and works whether or not an endpoint is running.
"""

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "meeshy_"

# ``*_created`` timestamps double the series count and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Seconds: from 5 ms to 30 s, for latencies (set-up, switches, transcription).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Seconds: from 1 s to 4 h, for call durations.
DURATION_BUCKETS: tuple[float, ...] = (
    1.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
)  # fmt: skip

#: Every series of this process; what the endpoint exposes.
REGISTRY = CollectorRegistry(auto_describe=True)

M = TypeVar("M", Counter, Gauge, Histogram)
_declared: dict[str, tuple[type[Any], tuple[str, ...], Any]] = {}
_lock = threading.Lock()


def full_name(name: str) -> str:
    return name if name.startswith(PREFIX) else PREFIX + name


def _declare(kind: type[M], name: str, doc: str, labels: Sequence[str], **kw: Any) -> M:
    name = full_name(name)
    with _lock:
        known = _declared.get(name)
        if known is not None:
            known_kind, known_labels, series = known
            if known_kind is not kind or known_labels != tuple(labels):
                raise ValueError(f"metric {name} already declared differently")
            return series  # type: ignore[no-any-return]
        series = kind(name, doc, labelnames=tuple(labels), registry=REGISTRY, **kw)
        _declared[name] = (kind, tuple(labels), series)
        return series


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    """A count that only goes up (name it ``..._total``)."""
    return _declare(Counter, name, doc, labels)


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    """A value that goes up and down, set by the code."""
    return _declare(Gauge, name, doc, labels)


def histogram(
    name: str,
    doc: str,
    labels: Sequence[str] = (),
    buckets: Sequence[float] = LATENCY_BUCKETS,
) -> Histogram:
    """A distribution (latencies in seconds: name it ``..._seconds``)."""
    return _declare(Histogram, name, doc, labels, buckets=tuple(buckets))


Sample = float | Mapping[tuple[str, ...], float]


class _Sampled(Collector):
    """A gauge read at scrape time from a callback."""

    def __init__(
        self, name: str, doc: str, labels: Sequence[str], read: Callable[[], Sample]
    ) -> None:
        self.name, self.doc, self.labels, self.read = name, doc, tuple(labels), read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels or None)
        try:
            value = self.read()
        except Exception:  # a scrape must never break on one callback
            return [family]
        if isinstance(value, Mapping):
            for label_values, v in value.items():
                family.add_metric(list(label_values), float(v))
        else:
            family.add_metric([], float(value))
        return [family]

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.doc, labels=self.labels or None)]


_sampled: dict[str, _Sampled] = {}


def sampled(name: str, doc: str, read: Callable[[], Sample], labels: Sequence[str] = ()) -> None:
    """A gauge whose value ``read()`` gives at each scrape (a float, or per label values).

    Declaring the same name again replaces the callback (a service restarted in-process).
    """
    name = full_name(name)
    with _lock:
        old = _sampled.pop(name, None)
        if old is not None:
            REGISTRY.unregister(old)
        collector = _Sampled(name, doc, labels, read)
        REGISTRY.register(collector)
        _sampled[name] = collector


class _Dynamic(Collector):
    """Gauges whose names are only known at scrape time (a service's load figures)."""

    def __init__(self, prefix: str, read: Callable[[], Mapping[str, float]]) -> None:
        self.prefix, self.read = prefix, read

    def collect(self) -> Iterable[Metric]:
        try:
            values = dict(self.read())
        except Exception:
            return []
        return [
            _one(f"{self.prefix}{key}", f"Heartbeat load figure {key}.", value)
            for key, value in sorted(values.items())
        ]


def _one(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], float(value))
    return family


_dynamic: dict[str, _Dynamic] = {}


def dynamic(prefix: str, read: Callable[[], Mapping[str, float]]) -> None:
    """Export every ``name: value`` that ``read()`` returns as ``meeshy_<prefix><name>``.

    ``read`` runs on the scrape thread, not the event loop: it must only hand back a
    snapshot taken on the loop (see ``Heartbeater.take_load``), never walk live state.
    """
    prefix = full_name(prefix)
    with _lock:
        old = _dynamic.pop(prefix, None)
        if old is not None:
            REGISTRY.unregister(old)
        collector = _Dynamic(prefix, read)
        REGISTRY.register(collector)
        _dynamic[prefix] = collector


class MetricsEndpoint:
    """The HTTP endpoint Prometheus scrapes (a small server thread, off the event loop)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def start(self) -> "MetricsEndpoint":
        self._server, self._thread = start_http_server(
            self.requested_port, addr=self.host, registry=REGISTRY
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
