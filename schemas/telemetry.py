"""Tracing (OpenTelemetry): set-up per service, and the trace context carried in NATS headers.

Every hop of the bus (:mod:`schemas.bus`) joins the current trace when tracing is on: a
publish (core or JetStream) or a request writes the W3C ``traceparent``/``tracestate``
headers from a PRODUCER/CLIENT span; a subscriber, responder or consumer continues that
context in a CONSUMER/SERVER span around its handler, so anything the handler publishes is a
child. One trace thus follows a join from the gateway through the selector and the media
node, or an utterance from the audio tap to the delivered caption.

Where spans go (``OTEL_TRACES_EXPORTER``): ``none`` (the default, and the tests'), ``console``
(development: one JSON span per line on stderr), ``otlp`` (OTLP over HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT``, e.g. the collector in compose.yaml) or ``file`` (JSON lines
appended to ``OTEL_TRACES_FILE``). ``OTEL_TRACES_SAMPLER_RATIO`` samples new traces (a
trace started upstream keeps its decision).

With ``none`` the bus does no tracing work at all: one module attribute is checked per
message (see bench/bus.py for the cost either way). A process with tracing off is a gap in
the trace: it neither records nor forwards the context.
"""

import json
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from schemas.version import PACKAGE_VERSION

TracesExporter = Literal["none", "console", "otlp", "file"]

#: The header a traced message carries (W3C trace context).
TRACEPARENT = "traceparent"

_propagator = TraceContextTextMapPropagator()


class _State:
    """This process's tracing: ``active`` is what the bus checks on every message."""

    __slots__ = ("active", "global_set", "provider", "tracer")

    def __init__(self) -> None:
        self.active = False
        self.provider: TracerProvider | None = None
        self.tracer: Tracer = trace.get_tracer("meeshy.bus")
        self.global_set = False


STATE = _State()


class JsonLinesExporter(SpanExporter):
    """Each finished span as one JSON object per line (``file`` and ``console``)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_record(s), separators=(",", ":")) + "\n" for s in spans]
        with self._lock:
            self._out.writelines(lines)
            self._out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._out not in (sys.stdout, sys.stderr):
            self._out.close()


def span_record(span: ReadableSpan) -> dict[str, object]:
    """A span as plain data: ids in hex, times in ns, attributes, the service."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "service": span.resource.attributes.get("service.name"),
        "service_id": span.resource.attributes.get("service.instance.id"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        # A batch's span links to the trace of each message it handled.
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
    }


def configure_tracing(
    kind: str,
    service_id: str,
    exporter: TracesExporter,
    *,
    otlp_endpoint: str = "",
    traces_file: str = "",
    sampler_ratio: float = 1.0,
) -> TracerProvider | None:
    """Install the tracer provider of this process (``none``: nothing, tracing stays off)."""
    if exporter == "none":
        return None
    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = JsonLinesExporter(sys.stderr)
    elif exporter == "file":
        if not traces_file:
            raise ValueError("OTEL_TRACES_FILE is required with OTEL_TRACES_EXPORTER=file")
        span_exporter = JsonLinesExporter(open(traces_file, "a", encoding="utf-8"))  # noqa: SIM115
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if endpoint and not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        span_exporter = OTLPSpanExporter(endpoint=endpoint or None)
    resource = Resource.create(
        {
            "service.name": kind,
            "service.instance.id": service_id,
            "service.version": PACKAGE_VERSION,
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(sampler_ratio))
    )
    # Files and the console get each span at once (tests read them); OTLP batches.
    processor = (
        BatchSpanProcessor(span_exporter)
        if exporter == "otlp"
        else SimpleSpanProcessor(span_exporter)
    )
    provider.add_span_processor(processor)
    install(provider)
    return provider


def install(provider: TracerProvider) -> None:
    """Make ``provider`` this process's tracer provider and switch bus tracing on.

    Tests install one with an in-memory exporter; :func:`uninstall` switches it off again.
    """
    STATE.provider = provider
    STATE.tracer = provider.get_tracer("meeshy.bus", PACKAGE_VERSION)
    if not STATE.global_set:  # OpenTelemetry accepts the global provider once per process
        trace.set_tracer_provider(provider)
        STATE.global_set = True
    STATE.active = True


def uninstall() -> None:
    """Switch bus tracing off and flush what the provider holds."""
    STATE.active = False
    if STATE.provider is not None:
        STATE.provider.shutdown()
    STATE.provider = None
    STATE.tracer = trace.get_tracer("meeshy.bus")


def shutdown() -> None:
    """Flush and stop the exporter (at service exit)."""
    uninstall()


def tracer() -> Tracer:
    """The tracer for spans of our own (a socket event, a migration step)."""
    return STATE.tracer


def inject(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus the current trace context."""
    out = dict(headers) if headers else {}
    _propagator.inject(out)
    return out


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The trace context a message carries, or ``None``."""
    if not headers or TRACEPARENT not in headers:
        return None
    return _propagator.extract(headers)


def span_name(subject: str, operation: str) -> str:
    """A low-cardinality span name: the subject's first two tokens and the operation."""
    head = ".".join(subject.split(".", 2)[:2])
    return f"{head} {operation}"


def attributes(subject: str, operation: str) -> dict[str, str]:
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
    }


__all__ = [
    "STATE",
    "TRACEPARENT",
    "JsonLinesExporter",
    "SpanKind",
    "attributes",
    "configure_tracing",
    "extract",
    "inject",
    "install",
    "shutdown",
    "span_name",
    "tracer",
    "uninstall",
]
