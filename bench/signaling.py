"""Gateway signaling benchmark: call set-up time and cross-gateway relay latency.

Starts its own nats-server and two gateway processes (loopback, free ports), then:

1. **Set-up time** of sequential P2P calls, caller on gateway A and callee on gateway B:
   from ``call:initiate`` until both sides receive audio and video frames (aiortc peers;
   ring, accept, offer/answer and trickled ICE all go through the gateways). p50/p95.
2. **Signal relay latency** between the two gateways with N idle authenticated sockets
   connected to each (helper processes hold them): one-way time of a ``call:signal``
   (ICE candidate) from a client on A to a client on B, sequential samples. p50/p99.
   Goal: p99 < 20 ms on loopback with 1,000 idle sockets per gateway.

The last line is one JSON object (``setup_p50_s``, ``setup_p95_s``, ``relay_p50_ms``,
``relay_p99_ms`` ...). ``--quick`` runs a small version (5 calls, 100 sockets per gateway).
"""

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.relay import relay_samples, token_for
from bench.stats import pct
from tests.support.call_client import CallClient
from tests.support.gateways import GatewayCluster
from tests.support.nats_server import NatsServer

ROOT = str(Path(__file__).resolve().parents[1])
BENCH_ENV = {
    # Its idle sockets all connect from 127.0.0.1 (one address bucket of 2 connects/s).
    "RATE_CONNECT_PER_S": "100000",
    "RATE_CONNECT_BURST": "100000",
    "RATE_SIGNAL_PER_S": "100000",
    "RATE_SIGNAL_BURST": "100000",
    "RATE_INITIATE_PER_S": "1000",
    "RATE_INITIATE_BURST": "1000",
    "RATE_DEFAULT_PER_S": "100000",
    "RATE_DEFAULT_BURST": "100000",
    "CALL_HEARTBEAT_TIMEOUT_S": "120",
    "CALL_RING_TIMEOUT_S": "30",
    "LOG_LEVEL": "warning",
}


def for_call(call_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda payload: payload.get("callId") == call_id


# --- idle socket helper process ---------------------------------------------------------------
async def idle_worker(url: str, prefix: str, count: int) -> None:
    """Hold ``count`` idle authenticated sockets (one user each) until stdin closes."""
    clients = [CallClient(url, token_for(f"{prefix}-{i}"), media=False) for i in range(count)]
    batch = 50
    for start in range(0, count, batch):
        await asyncio.gather(*(c.open(timeout=30) for c in clients[start : start + batch]))
    print(f"ready {count}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for start in range(0, count, batch):
        await asyncio.gather(*(c.close() for c in clients[start : start + batch]))


async def spawn_idle(url: str, prefix: str, count: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--idle-worker",
        url,
        prefix,
        str(count),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


# --- measurements ------------------------------------------------------------------------------
async def setup_times(cluster: GatewayCluster, calls: int) -> list[float]:
    conv = "bench-dm"
    cluster.put_conversation(conv, "DIRECT", ["bench-alice", "bench-bob"])
    gw_a, gw_b = cluster.urls
    alice = await CallClient.connect(gw_a, token_for("bench-alice"), name="alice")
    bob = await CallClient.connect(gw_b, token_for("bench-bob"), name="bob")
    times: list[float] = []
    try:
        for _ in range(calls):
            t0 = time.monotonic()
            call_id = (await alice.initiate(conv))["call"]["callId"]
            await bob.wait_for("call:incoming", for_call(call_id))
            await bob.accept(call_id)
            await asyncio.gather(
                alice.wait_media(min_frames=1, timeout=30), bob.wait_media(min_frames=1, timeout=30)
            )
            times.append(time.monotonic() - t0)
            await alice.leave()
            await bob.wait_for("call:ended", for_call(call_id))
            await bob.close_links()
    finally:
        await asyncio.gather(alice.close(), bob.close())
    return times


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 calls, 100 idle sockets/gateway")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--idle", type=int, default=None, help="idle sockets per gateway")
    parser.add_argument("--samples", type=int, default=None, help="relay samples")
    args = parser.parse_args()
    calls = args.calls or (5 if args.quick else 50)
    idle = args.idle if args.idle is not None else (100 if args.quick else 1000)
    samples = args.samples or (200 if args.quick else 1000)

    server = NatsServer().start()
    cluster = GatewayCluster(server.url, count=2, env=BENCH_ENV).start()
    workers: list[asyncio.subprocess.Process] = []
    try:
        print(f"gateways: {', '.join(cluster.urls)} on {server.url}")
        setup = await setup_times(cluster, calls)
        print(
            f"call set-up (initiate -> both receive media), {calls} sequential P2P calls: "
            f"p50 {pct(setup, 0.5):.3f}s  p95 {pct(setup, 0.95):.3f}s  max {max(setup):.3f}s"
        )
        t0 = time.monotonic()
        workers = (
            [await spawn_idle(url, f"idle{i}", idle) for i, url in enumerate(cluster.urls)]
            if idle
            else []
        )
        for w in workers:
            assert w.stdout is not None
            line = await asyncio.wait_for(w.stdout.readline(), 300)
            if not line.startswith(b"ready"):
                raise RuntimeError(f"idle worker failed: {line!r}")
        connect_s = time.monotonic() - t0
        print(f"idle sockets: {idle} per gateway connected in {connect_s:.1f}s")
        relay = await relay_samples(cluster, "signaling", samples)
        print(
            f"signal relay A -> NATS -> B, {len(relay)} samples with {idle} idle sockets/gateway: "
            f"p50 {pct(relay, 0.5):.2f}ms  p99 {pct(relay, 0.99):.2f}ms  max {max(relay):.2f}ms"
        )
        result = {
            "calls": calls,
            "setup_p50_s": round(pct(setup, 0.5), 4),
            "setup_p95_s": round(pct(setup, 0.95), 4),
            "setup_max_s": round(max(setup), 4),
            "idle_sockets_per_gateway": idle,
            "idle_connect_s": round(connect_s, 2),
            "relay_samples": len(relay),
            "relay_p50_ms": round(pct(relay, 0.5), 3),
            "relay_p99_ms": round(pct(relay, 0.99), 3),
            "relay_max_ms": round(max(relay), 3),
            "relay_goal_met": pct(relay, 0.99) < 20.0,
        }
        print(json.dumps(result))
        return 0
    finally:
        for w in workers:
            if w.stdin is not None:
                w.stdin.close()
        for w in workers:
            try:
                await asyncio.wait_for(w.wait(), 60)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.kill()
                await w.wait()
        cluster.stop()
        server.cleanup()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--idle-worker":
        asyncio.run(idle_worker(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        sys.exit(0)
    sys.exit(asyncio.run(main()))
