"""Trace context in NATS headers: every bus path joins the trace it was given.

Two buses (two connections, as two services would have) on a real nats-server, spans kept
in memory. nats-py runs each subscription callback in its own task, so a consumer's span
can only find its parent through the message headers.
"""

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import msgspec
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from schemas import subjects, telemetry
from schemas.bus import Bus, Incoming, RpcFailure
from schemas.call_events import CallEnded
from schemas.captions import TranscriptSegment
from schemas.ids import new_id
from schemas.media import AudioChunk
from schemas.metrics import REGISTRY
from schemas.settings import BusSettings
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector, eventually
from transcriber.engine import SpeechToText, SttCapabilities, SttRequest, SttResult
from transcriber.worker import TranscriberWorker, WorkerConfig


class Ping(msgspec.Struct, frozen=True, kw_only=True, tag="test.ping"):
    n: int


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    """This module's own server: its transcriber worker needs the work queue
    ``AUDIO_CHUNKS`` to itself (a work-queue stream takes one consumer per subject, and the
    session's server has the other transcriber tests' consumer)."""
    server = NatsServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.install(provider)
    yield exporter
    telemetry.uninstall()


def by_kind(exporter: InMemorySpanExporter, kind: SpanKind, subject: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.kind == kind and (s.attributes or {}).get("messaging.destination.name") == subject
    ]


def child_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None and child.context is not None and parent.context is not None
    return bool(
        child.context.trace_id == parent.context.trace_id
        and child.parent.span_id == parent.context.span_id
    )


async def test_publish_subscribe_and_a_second_hop_join_one_trace(
    spans: InMemorySpanExporter, bus_settings: BusSettings, uid: str
) -> None:
    a = await Bus.connect(bus_settings, f"svc-a-{uid}")
    b = await Bus.connect(bus_settings, f"svc-b-{uid}")
    first, second = f"test.{uid}.first", f"test.{uid}.second"
    try:
        end: Collector[Ping] = Collector()

        async def relay(msg: Ping, _: Incoming) -> None:
            await b.publish(second, Ping(n=msg.n + 1))

        await b.subscribe(first, Ping, relay)
        await a.subscribe(second, Ping, end)
        await a.flush()
        await b.flush()
        with telemetry.tracer().start_as_current_span("a join", kind=SpanKind.SERVER) as root:
            await a.publish(first, Ping(n=1))
        assert (await end.wait_count(1))[0].n == 2
        await eventually(lambda: len(by_kind(spans, SpanKind.CONSUMER, second)) == 1, 5)
        [p1] = by_kind(spans, SpanKind.PRODUCER, first)
        [c1] = by_kind(spans, SpanKind.CONSUMER, first)
        [p2] = by_kind(spans, SpanKind.PRODUCER, second)
        [c2] = by_kind(spans, SpanKind.CONSUMER, second)
        assert p1.context is not None
        assert root.get_span_context().trace_id == p1.context.trace_id
        assert child_of(c1, p1) and child_of(p2, c1) and child_of(c2, p2)
        assert p1.name == f"test.{uid} publish"
    finally:
        await a.close()
        await b.close()


async def test_request_serve_and_jetstream_paths_carry_the_trace(
    spans: InMemorySpanExporter, bus: Bus, bus_settings: BusSettings, uid: str
) -> None:
    a = bus  # provisioned: CALL_EVENTS exists
    b = await Bus.connect(bus_settings, f"svc-b-{uid}")
    rpc = f"test.{uid}.rpc"
    try:

        async def answer(msg: Ping, _: Incoming) -> Ping:
            if msg.n < 0:
                raise RpcFailure("bad_request", "negative")
            return Ping(n=msg.n * 2)

        await b.serve(rpc, Ping, answer)
        await b.flush()
        assert (await a.request(rpc, Ping(n=21), Ping)).n == 42
        [client] = by_kind(spans, SpanKind.CLIENT, rpc)
        await eventually(lambda: len(by_kind(spans, SpanKind.SERVER, rpc)) == 1, 5)
        [server] = by_kind(spans, SpanKind.SERVER, rpc)
        assert child_of(server, client)
        before = REGISTRY.get_sample_value("meeshy_rpc_errors_total", {"code": "bad_request"})
        with pytest.raises(Exception, match="negative"):
            await a.request(rpc, Ping(n=-1), Ping)
        await eventually(lambda: len(by_kind(spans, SpanKind.SERVER, rpc)) == 2, 5)
        failed = by_kind(spans, SpanKind.SERVER, rpc)[1]
        assert failed.status.status_code == StatusCode.ERROR
        after = REGISTRY.get_sample_value("meeshy_rpc_errors_total", {"code": "bad_request"})
        assert (after or 0) == (before or 0) + 1

        call = f"trace-{uid}"
        subject = subjects.call_event(call, CallEnded.subject_name)
        got: Collector[CallEnded] = Collector()
        await b.consume(
            stream=subjects.CALL_EVENTS_STREAM,
            durable=f"tr-{uid}",
            filter_subject=subject,
            type_=CallEnded,
            handler=got,
        )
        await a.js_publish(subject, CallEnded(call_id=call, reason="completed"), msg_id=new_id())
        await got.wait_count(1)
        await eventually(lambda: len(by_kind(spans, SpanKind.CONSUMER, subject)) == 1, 5)
        [produced] = by_kind(spans, SpanKind.PRODUCER, subject)
        [consumed] = by_kind(spans, SpanKind.CONSUMER, subject)
        assert child_of(consumed, produced)
    finally:
        await b.close()


async def test_without_an_exporter_no_header_is_added(bus: Bus, uid: str) -> None:
    assert not telemetry.STATE.active
    subject = f"test.{uid}.plain"
    seen: list[dict[str, str] | None] = []

    async def raw(msg: Incoming) -> None:
        seen.append(msg.headers)

    await bus.nc.subscribe(subject, cb=raw)
    await bus.flush()
    await bus.publish(subject, Ping(n=1))
    await eventually(lambda: len(seen) == 1, 5)
    assert not seen[0] or telemetry.TRACEPARENT not in seen[0]


class _Heard(SpeechToText):
    """A stand-in recogniser (the tracing path is under test, not Whisper)."""

    def __init__(self) -> None:
        self.capabilities = SttCapabilities(languages=frozenset({"en"}), batching=True)

    def load(self) -> None:
        pass

    def transcribe(self, requests: Sequence[SttRequest]) -> list[SttResult]:
        return [SttResult("Hello everyone.", None, None, "stand-in") for _ in requests]


async def test_an_utterance_keeps_its_trace_through_the_transcriber(
    spans: InMemorySpanExporter, bus: Bus, bus_settings: BusSettings, uid: str
) -> None:
    """The audio tap's chunk (media node) -> transcriber -> the segment's readers (bridge,
    archive): one trace, the segment's publish a child of the chunk's delivery."""
    reader = await Bus.connect(bus_settings, f"bridge-{uid}")
    worker = TranscriberWorker(
        bus=bus,
        engine=_Heard(),
        executor=ThreadPoolExecutor(1),
        config=WorkerConfig(durable=f"tr-{uid}"),
        service_id=f"transcriber-{uid}",
    )
    call, speaker = f"call-{uid}", f"p-{uid}"
    got: Collector[TranscriptSegment] = Collector()
    segments = subjects.transcript_segment(call)
    chunks = subjects.audio_chunk(call, speaker)
    await reader.subscribe(segments, TranscriptSegment, got)
    await worker.start()
    try:
        chunk = AudioChunk(
            call_id=call, participant_id=speaker, utterance_id=f"u-{uid}", sequence=0,
            is_final=True, start_s=0.0, end_s=1.0, started_at=datetime.now(UTC),
            speech_end_s=0.9, pcm=bytes(32000),
        )  # fmt: skip
        with telemetry.tracer().start_as_current_span("an utterance") as root:
            await bus.publish(chunks, chunk)
        await got.wait_count(1, timeout=20)
        await eventually(lambda: len(by_kind(spans, SpanKind.CONSUMER, segments)) == 1, 5)
        [tapped] = by_kind(spans, SpanKind.PRODUCER, chunks)
        [picked] = by_kind(spans, SpanKind.CONSUMER, chunks)
        [published] = by_kind(spans, SpanKind.PRODUCER, segments)
        [read] = by_kind(spans, SpanKind.CONSUMER, segments)
        assert child_of(picked, tapped) and child_of(published, picked)
        assert child_of(read, published)
        assert read.context is not None
        assert read.context.trace_id == root.get_span_context().trace_id
    finally:
        await worker.stop()
        await reader.close()
