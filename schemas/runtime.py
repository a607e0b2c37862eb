"""The life of a service process: connect, provision, serve, heartbeat, drain, exit.

Each service implements :class:`Service`; :func:`launch` does the rest the same way for all:

1. read its settings (a bad variable: a clear message on stderr, exit code 2);
2. connect to NATS, retrying until the deadline (none answered: exit code 3);
3. provision streams and KV buckets (idempotent), start the service, heartbeat ``ready``;
4. on SIGTERM or SIGINT: heartbeat ``draining``, stop taking new work, let work in hand
   finish (up to ``DRAIN_TIMEOUT_S``), heartbeat ``stopped``, drain the connection, exit 0.
"""

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar, Generic, TypeVar

import psutil

from schemas import metrics, subjects, telemetry
from schemas.bus import Bus
from schemas.errors import BusUnavailable, SettingsError
from schemas.heartbeat import ServiceHeartbeat, ServiceKind, ServiceLoad, ServiceState
from schemas.js_retry import retry_transient
from schemas.logs import configure_logging, get_logger
from schemas.message import utc_now
from schemas.permissions import SERVICE_ROLES
from schemas.provisioning import provision
from schemas.settings import ServiceSettings, default_service_id
from schemas.version import PACKAGE_VERSION

S = TypeVar("S", bound=ServiceSettings)

EXIT_OK = 0
EXIT_BAD_SETTINGS = 2
EXIT_BUS_UNAVAILABLE = 3
EXIT_FAILED = 1

log = get_logger("schemas.runtime")


class InFlight:
    """Counts work in hand so draining can wait for it to finish."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __enter__(self) -> "InFlight":
        self.count += 1
        self.total += 1
        self._idle.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class Service(ABC, Generic[S]):
    """One kind of worker. Subclasses set ``kind`` and implement start / stop_accepting."""

    kind: ClassVar[ServiceKind]

    def __init__(self, settings: S, service_id: str) -> None:
        self.settings = settings
        self.service_id = service_id
        self.in_flight = InFlight()
        self.accepting = False
        #: Set (by ``close``) when work given up at the drain deadline still runs in an
        #: executor thread: :func:`launch` then ends the process without joining it.
        self.abandoned_threads = False

    @abstractmethod
    async def start(self, bus: Bus) -> None:
        """Subscribe and start serving. Called once the bus is connected and provisioned."""

    async def stop_accepting(self) -> None:
        """Stop taking new work (unsubscribe, close listeners); work in hand continues."""
        self.accepting = False

    async def wait_idle(self) -> None:
        """Return when the work in hand is done."""
        await self.in_flight.wait_idle()

    async def close(self) -> None:
        """Release what is left after draining (sockets, executors)."""

    def load_extra(self) -> dict[str, float]:
        """Kind-specific gauges for the heartbeat."""
        return {}


class Heartbeater:
    """Publishes the instance's heartbeat on a timer and at each state change."""

    def __init__(self, bus: Bus, service: Service[ServiceSettings]) -> None:
        self.bus = bus
        self.service = service
        self.state: ServiceState = "starting"
        self.started_at: datetime = utc_now()
        self.subject = subjects.service_heartbeat(service.kind, service.service_id)
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)
        self._task: asyncio.Task[None] | None = None
        #: Where ``/metrics`` is served (0: not served); operators find it in the heartbeat.
        self.metrics_port = 0
        #: The service's load figures as of the last beat, taken on the event loop: the
        #: Prometheus scrape thread reads this dict (replaced whole, never changed in place)
        #: instead of calling into service state the loop may be changing meanwhile.
        self.load_seen: dict[str, float] = {}

    def take_load(self) -> dict[str, float]:
        """The service's load figures now (call on the event loop); kept for scrapes."""
        self.load_seen = dict(self.service.load_extra())
        return self.load_seen

    def snapshot(self) -> ServiceHeartbeat:
        svc = self.service
        extra = {**self.bus.stats.as_gauges(), **self.take_load()}
        if self.metrics_port:
            extra["metrics_port"] = float(self.metrics_port)
        return ServiceHeartbeat(
            service_id=svc.service_id,
            kind=svc.kind,
            version=PACKAGE_VERSION,
            state=self.state,
            started_at=self.started_at,
            interval_s=svc.settings.heartbeat_interval_s,
            load=ServiceLoad(
                in_flight=svc.in_flight.count,
                handled_total=svc.in_flight.total,
                cpu_percent=self._process.cpu_percent(None),
                rss_bytes=self._process.memory_info().rss,
                extra=extra,
            ),
        )

    async def beat(self, state: ServiceState | None = None) -> None:
        if state is not None:
            self.state = state
        try:
            # No flush: nats-py sends its buffer by itself, and the close drains it. A flush
            # that times out leaves its cancelled PONG future behind, and the late PONG then
            # raises inside nats-py (InvalidStateError, seen while draining).
            await self.bus.publish(self.subject, self.snapshot(), trace=False)
        except Exception as exc:  # a missed beat is not worth dying for
            log.warning("heartbeat.failed", error=type(exc).__name__)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.service.settings.heartbeat_interval_s)
                await self.beat()

        self._task = asyncio.create_task(loop(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def run_service(service: Service[S], stop: asyncio.Event | None = None) -> int:
    """Run one service until ``stop`` is set or SIGTERM/SIGINT arrives; returns the exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        return await _serve(service, stop)
    finally:
        # Give the signals back before the loop closes: a late second SIGTERM must not hit
        # the loop's closed wake-up pipe (Python would print a traceback for it).
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _serve(service: Service[S], stop: asyncio.Event) -> int:
    settings = service.settings
    log.info(
        "service.starting", kind=service.kind, version=PACKAGE_VERSION, settings=settings.redacted()
    )
    try:
        bus = await Bus.connect(settings, service.service_id)
    except BusUnavailable as exc:
        log.error("service.bus_unavailable", kind=service.kind, reason=str(exc))
        print(f"{service.kind}: {exc}", file=sys.stderr)
        return EXIT_BUS_UNAVAILABLE

    heart = Heartbeater(bus, service)  # type: ignore[arg-type]
    try:
        endpoint = _start_metrics(service, bus, heart)
    except OSError as exc:
        log.error("service.metrics_port_unavailable", kind=service.kind, error=str(exc))
        print(f"{service.kind}: cannot serve metrics: {exc}", file=sys.stderr)
        await bus.close()
        return EXIT_FAILED
    try:
        # Under its role's NATS user a service provisions only what the role owns (it may
        # touch nothing else); under an all-access user, everything, as before.
        role = SERVICE_ROLES.get(service.kind)
        if role is not None and settings.effective_user() != role.name:
            role = None
        await provision(bus.js, settings, role)
        # A restarted server comes back without its memory streams (AUDIO_CHUNKS).
        bus.on_reconnect(
            lambda: retry_transient(
                lambda: provision(bus.js, settings, role), what="provision", idempotent=True
            )
        )
        await heart.beat("starting")
        service.accepting = True
        await service.start(bus)
        await heart.beat("ready")
        heart.start()
        log.info("service.ready", kind=service.kind)
        await stop.wait()

        started = time.monotonic()
        log.info("service.draining", kind=service.kind, in_flight=service.in_flight.count)
        await heart.stop()
        await heart.beat("draining")
        await service.stop_accepting()
        try:
            await asyncio.wait_for(service.wait_idle(), settings.drain_timeout_s)
        except TimeoutError:
            log.warning(
                "service.drain_deadline",
                kind=service.kind,
                abandoned=service.in_flight.count,
                deadline_s=settings.drain_timeout_s,
            )
        await service.close()
        await heart.beat("stopped")
        await bus.drain()
        log.info("service.stopped", kind=service.kind, drain_s=round(time.monotonic() - started, 3))
        return EXIT_OK
    except Exception as exc:
        log.exception("service.failed", kind=service.kind, error=type(exc).__name__)
        await heart.stop()
        with contextlib.suppress(Exception):
            await service.close()
            await bus.close()
        return EXIT_FAILED
    finally:
        if endpoint is not None:
            endpoint.stop()


def _stat_reader(bus: Bus, name: str) -> Callable[[], float]:
    return lambda: float(getattr(bus.stats, name))


_STATE_VALUE = {"starting": 0.0, "ready": 1.0, "draining": 2.0, "stopped": 3.0}


def _start_metrics(
    service: Service[S], bus: Bus, heart: "Heartbeater"
) -> metrics.MetricsEndpoint | None:
    """Declare every service's own series and serve them if ``METRICS_PORT`` is set."""
    kind = service.kind
    metrics.sampled(
        "service_info",
        "This instance (always 1): kind, id and version.",
        lambda: {(kind, service.service_id, PACKAGE_VERSION): 1.0},
        labels=("kind", "service_id", "version"),
    )
    metrics.sampled(
        "service_state",
        "0 starting, 1 ready, 2 draining, 3 stopped.",
        lambda: _STATE_VALUE[heart.state],
    )
    metrics.sampled("in_flight", "Work in hand.", lambda: float(service.in_flight.count))
    metrics.sampled(
        "handled_total", "Work done since start.", lambda: float(service.in_flight.total)
    )
    for name, doc in (
        ("published", "Messages published."),
        ("received", "Messages received."),
        ("decode_failures", "Messages that did not decode (dead-lettered)."),
        ("handler_failures", "Handlers that raised."),
        ("dead_lettered", "Messages parked on the dead-letter stream."),
        ("requests_timed_out", "Requests that got no reply in time."),
    ):
        metrics.sampled(f"bus_{name}_total", doc, _stat_reader(bus, name))
    # As of the last heartbeat (the first, "starting", comes before the service starts).
    metrics.dynamic(f"{kind}_", lambda: heart.load_seen)
    port = service.settings.metrics_port
    if port is None:
        return None
    endpoint = metrics.MetricsEndpoint(service.settings.metrics_host, port).start()
    heart.metrics_port = endpoint.port
    log.info(
        "service.metrics_listening",
        kind=kind,
        host=service.settings.metrics_host,
        port=endpoint.port,
    )
    return endpoint


def launch(service_type: type[Service[S]], settings_type: type[S]) -> int:
    """Entry point body of ``python -m <service>``: settings, logging, run; the exit code."""
    try:
        settings = settings_type.from_env()
    except SettingsError as exc:
        print(f"{service_type.kind}: configuration error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    service_id = settings.service_id or default_service_id(service_type.kind)
    configure_logging(service_type.kind, service_id, settings.log_level)
    try:
        telemetry.configure_tracing(
            service_type.kind,
            service_id,
            settings.otel_traces_exporter,
            otlp_endpoint=settings.otel_exporter_otlp_endpoint,
            traces_file=settings.otel_traces_file,
            sampler_ratio=settings.otel_traces_sampler_ratio,
        )
    except (ValueError, OSError) as exc:
        print(f"{service_type.kind}: configuration error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    service = service_type(settings, service_id)
    try:
        code = asyncio.run(run_service(service))
    finally:
        telemetry.shutdown()
    if service.abandoned_threads:
        # concurrent.futures joins every executor thread at interpreter exit: a stuck one
        # (a wedged model call) would keep the stopped process alive until SIGKILL.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
