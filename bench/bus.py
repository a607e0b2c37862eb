"""Cost of the typed bus layer over raw nats-py, measured in the same run.

Starts its own nats-server (loopback, free port) and compares, round by round:

- publish -> subscribe throughput (messages/s) and one-at-a-time latency (p50/p99),
- request -> reply latency (p50/p99) and throughput,

for raw nats-py (bytes in, bytes out), for ``schemas.bus.Bus`` (a typed
``ParticipantJoined`` encoded, decoded and validated with msgspec on every hop) with tracing
off (the default: no exporter configured), and for the same bus with tracing on (a span per
hop, trace context in the headers, spans batched to an exporter that drops them).

Steadiness: a long run of each side, one after the other, measures the machine as much as
the code (on 2 shared cores the typed/raw ratio read 0.77 to 2.51 across runs). So the sides
alternate in many short rounds (the order rotating each round), each round gives a paired
ratio (typed over raw measured seconds apart), and the figure is the median of those
ratios, with their spread: the inner half (``*_iqr``) and the smallest and largest
(``*_spread``). One run then says whether the goal holds: it does when the upper quartile
is under the goal.

The last line is one JSON object; ``typed_*_overhead_ratio`` = the median paired ratio of
typed time per message to raw time per message (1.0 = free; the goal is under 1.15),
``traced_*`` the same with tracing on; ``*_goal_met`` whether the ratio's upper quartile
is under the goal.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.stats import pct
from schemas import telemetry
from schemas.bus import Bus, Incoming, flush_through
from schemas.call_events import Participant, ParticipantJoined
from schemas.codec import encode
from schemas.settings import BusSettings
from tests.support.nats_server import NatsServer

EVENT = ParticipantJoined(
    call_id="c0ffee",
    participant=Participant(
        participant_id="p-1", kind="user", user_id="u-1", display_name="Ada", language="fr"
    ),
    active_count=3,
)
RAW = encode(EVENT)


class Discard(SpanExporter):
    """Drops the spans: what is measured is the bus's tracing work, not an exporter's."""

    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


#: Typed time per message over raw, the goal.
GOAL = 1.15


class Paired:
    """Per-round paired ratios (side over raw, time per message) by measure."""

    def __init__(self, pubsub: list[float], request: list[float], latency: list[float]) -> None:
        self.ratios = {"pubsub": pubsub, "request": request, "latency": latency}

    def median(self, k: str) -> float:
        return statistics.median(self.ratios[k])

    def iqr(self, k: str) -> list[float]:
        """The inner half: lower and upper quartile."""
        q = statistics.quantiles(self.ratios[k], n=4, method="inclusive")
        return [round(q[0], 4), round(q[2], 4)]

    def spread(self, k: str) -> list[float]:
        return [round(min(self.ratios[k]), 4), round(max(self.ratios[k]), 4)]

    def met(self, k: str) -> bool:
        """The goal holds when the upper quartile is under it (three rounds in four)."""
        return self.iqr(k)[1] < GOAL


def tracing(on: bool) -> None:
    telemetry.STATE.active = on


async def throughput(
    publish: Callable[[], Awaitable[None]],
    flush: Callable[[], Awaitable[None]],
    got: list[int],
    n: int,
) -> float:
    """Messages per second from first publish to last delivery.

    The subscriber only counts; polling the counter every 0.5 ms keeps the subscriber's
    callback free of any bookkeeping that would blur the comparison.
    """
    got[0] = 0
    start = time.perf_counter()
    for _ in range(n):
        await publish()
    await flush()
    while got[0] < n:  # noqa: ASYNC110 - see the docstring
        await asyncio.sleep(0.0005)
    return n / (time.perf_counter() - start)


async def latencies(one: Callable[[], Awaitable[None]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await one()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    parser.add_argument("--rounds", type=int, default=0, help="paired rounds (default 21)")
    args = parser.parse_args()
    # Short rounds, many of them: each side runs well under a second per round, so the
    # machine changes little between the two halves of a pair.
    n_thr = 2_000 if args.quick else 5_000
    n_lat = 200 if args.quick else 400
    rounds = args.rounds or (7 if args.quick else 21)

    server = NatsServer().start()
    try:
        settings = BusSettings(nats_url=server.url)
        raw_pub = await nats.connect(server.url)
        raw_sub = await nats.connect(server.url)
        typed_pub = await Bus.connect(settings, "bench-pub")
        typed_sub = await Bus.connect(settings, "bench-sub")

        # --- publish -> subscribe ---------------------------------------------------
        raw_count = [0]
        typed_count = [0]
        raw_wait: list[asyncio.Future[None]] = []
        typed_wait: list[asyncio.Future[None]] = []

        async def raw_cb(msg: Msg) -> None:
            raw_count[0] += 1
            if raw_wait:
                raw_wait.pop().set_result(None)

        async def typed_cb(evt: ParticipantJoined, _: Incoming) -> None:
            typed_count[0] += 1
            if typed_wait:
                typed_wait.pop().set_result(None)

        await raw_sub.subscribe("bench.raw", cb=raw_cb)
        await typed_sub.subscribe("bench.typed", ParticipantJoined, typed_cb)
        await flush_through(raw_sub)
        await typed_sub.flush()

        async def raw_publish() -> None:
            await raw_pub.publish("bench.raw", RAW)

        async def typed_publish() -> None:
            await typed_pub.publish("bench.typed", EVENT)

        async def raw_one() -> None:
            fut = asyncio.get_running_loop().create_future()
            raw_wait.append(fut)
            await raw_pub.publish("bench.raw", RAW)
            await fut

        async def typed_one() -> None:
            fut = asyncio.get_running_loop().create_future()
            typed_wait.append(fut)
            await typed_pub.publish("bench.typed", EVENT)
            await fut

        # --- request -> reply -------------------------------------------------------
        async def raw_responder(msg: Msg) -> None:
            await msg.respond(msg.data)

        async def typed_responder(evt: ParticipantJoined, _: Incoming) -> ParticipantJoined:
            return evt

        await raw_sub.subscribe("bench.rpc.raw", cb=raw_responder)
        await typed_sub.serve("bench.rpc.typed", ParticipantJoined, typed_responder)
        await flush_through(raw_sub)
        await typed_sub.flush()

        async def raw_request() -> None:
            await raw_pub.request("bench.rpc.raw", RAW, timeout=2)

        async def typed_request() -> None:
            await typed_pub.request("bench.rpc.typed", EVENT, ParticipantJoined, timeout=2)

        res: dict[str, list[float]] = {
            f"{side}_{k}": []
            for side in ("raw", "typed", "traced")
            for k in ("thr", "p50", "p99", "rr_p50", "rr_p99")
        }
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=65536))
        telemetry.install(provider)
        tracing(False)
        # Warm up both paths (JIT-free Python still has caches: decoders, inboxes).
        await latencies(raw_one, 200)
        await latencies(typed_one, 200)
        await latencies(raw_request, 200)
        await latencies(typed_request, 200)
        tracing(True)
        await latencies(typed_one, 200)
        tracing(False)

        for r in range(rounds):
            # Rotate the order each round so no side always runs on a warmer CPU.
            order = [
                ("raw", raw_publish, raw_pub.flush, raw_count, raw_one, raw_request),
                ("typed", typed_publish, typed_pub.nc.flush, typed_count, typed_one, typed_request),
                (
                    "traced",
                    typed_publish,
                    typed_pub.nc.flush,
                    typed_count,
                    typed_one,
                    typed_request,
                ),
            ]
            order = order[r % 3 :] + order[: r % 3]
            for name, publish, flush, count, one, request in order:
                tracing(name == "traced")
                res[f"{name}_thr"].append(await throughput(publish, flush, count, n_thr))
                lat = await latencies(one, n_lat)
                res[f"{name}_p50"].append(pct(lat, 0.50))
                res[f"{name}_p99"].append(pct(lat, 0.99))
                rr = await latencies(request, n_lat)
                res[f"{name}_rr_p50"].append(pct(rr, 0.50))
                res[f"{name}_rr_p99"].append(pct(rr, 0.99))
                tracing(False)
            print(
                f"round {r + 1}/{rounds}: pub/sub raw {res['raw_thr'][-1]:,.0f} msg/s, "
                f"typed {res['typed_thr'][-1]:,.0f} msg/s "
                f"({res['raw_thr'][-1] / res['typed_thr'][-1]:.3f}), "
                f"traced {res['traced_thr'][-1]:,.0f} msg/s "
                f"({res['raw_thr'][-1] / res['traced_thr'][-1]:.3f})"
            )
        telemetry.uninstall()

        med = {k: statistics.median(v) for k, v in res.items()}
        # Time per message: pub/sub from throughput (raw over side), latencies side over raw.
        typed = Paired(
            [a / b for a, b in zip(res["raw_thr"], res["typed_thr"], strict=True)],
            [a / b for a, b in zip(res["typed_rr_p50"], res["raw_rr_p50"], strict=True)],
            [a / b for a, b in zip(res["typed_p50"], res["raw_p50"], strict=True)],
        )
        traced = Paired(
            [a / b for a, b in zip(res["raw_thr"], res["traced_thr"], strict=True)],
            [a / b for a, b in zip(res["traced_rr_p50"], res["raw_rr_p50"], strict=True)],
            [a / b for a, b in zip(res["traced_p50"], res["raw_p50"], strict=True)],
        )
        pubsub_ratio, request_ratio = typed.median("pubsub"), typed.median("request")
        typed_met = typed.met("pubsub") and typed.met("request")
        latency_ratio = typed.median("latency")
        print(
            f"payload: {type(EVENT).__name__}, {len(RAW)} bytes JSON; {rounds} paired rounds "
            f"({n_thr:,} messages, {n_lat} latency samples per side per round)"
        )

        def line(label: str, raw: str, typed: str) -> None:
            print(f"{label:<31}raw {raw:<32}typed {typed}")

        ms = "p50 {:.3f} ms p99 {:.3f} ms"
        line(
            "publish->subscribe throughput",
            f"{med['raw_thr']:,.0f} msg/s",
            f"{med['typed_thr']:,.0f} msg/s",
        )
        line(
            "publish->subscribe latency",
            ms.format(med["raw_p50"], med["raw_p99"]),
            ms.format(med["typed_p50"], med["typed_p99"]),
        )
        line(
            "request->reply latency",
            ms.format(med["raw_rr_p50"], med["raw_rr_p99"]),
            ms.format(med["typed_rr_p50"], med["typed_rr_p99"]),
        )
        for label, p in (("typed/raw, tracing off", typed), ("typed/raw, tracing on ", traced)):
            print(
                f"{label}: median paired ratio (inner half; min-max) "
                + ", ".join(
                    f"{k} {p.median(k):.3f} ({p.iqr(k)[0]:.3f}-{p.iqr(k)[1]:.3f}; "
                    f"{p.spread(k)[0]:.3f}-{p.spread(k)[1]:.3f})"
                    for k in ("pubsub", "request", "latency")
                )
                + (f"  goal < {GOAL}: {'met' if typed_met else 'NOT met'}" if p is typed else "")
            )
        print(
            f"tracing on: {med['traced_thr']:,.0f} msg/s, request p50 {med['traced_rr_p50']:.3f} ms"
        )

        for conn in (raw_pub, raw_sub):
            await conn.close()
        await typed_pub.close()
        await typed_sub.close()
    finally:
        server.cleanup()

    print(
        json.dumps(
            {
                "typed_pubsub_overhead_ratio": round(pubsub_ratio, 4),
                "typed_request_overhead_ratio": round(request_ratio, 4),
                "typed_pubsub_latency_ratio": round(latency_ratio, 4),
                "raw_pubsub_msgs_per_s": round(med["raw_thr"]),
                "typed_pubsub_msgs_per_s": round(med["typed_thr"]),
                "raw_pubsub_p50_ms": round(med["raw_p50"], 4),
                "raw_pubsub_p99_ms": round(med["raw_p99"], 4),
                "typed_pubsub_p50_ms": round(med["typed_p50"], 4),
                "typed_pubsub_p99_ms": round(med["typed_p99"], 4),
                "raw_request_p50_ms": round(med["raw_rr_p50"], 4),
                "raw_request_p99_ms": round(med["raw_rr_p99"], 4),
                "typed_request_p50_ms": round(med["typed_rr_p50"], 4),
                "typed_request_p99_ms": round(med["typed_rr_p99"], 4),
                "typed_pubsub_iqr": typed.iqr("pubsub"),
                "typed_pubsub_spread": typed.spread("pubsub"),
                "typed_request_iqr": typed.iqr("request"),
                "typed_request_spread": typed.spread("request"),
                "typed_goal_met": typed_met,
                "traced_pubsub_overhead_ratio": round(traced.median("pubsub"), 4),
                "traced_pubsub_iqr": traced.iqr("pubsub"),
                "traced_pubsub_spread": traced.spread("pubsub"),
                "traced_request_overhead_ratio": round(traced.median("request"), 4),
                "traced_request_iqr": traced.iqr("request"),
                "traced_request_spread": traced.spread("request"),
                "traced_pubsub_msgs_per_s": round(med["traced_thr"]),
                "traced_request_p50_ms": round(med["traced_rr_p50"], 4),
                "payload_bytes": len(RAW),
                "rounds": rounds,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
