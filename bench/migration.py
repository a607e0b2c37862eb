"""Migration benchmark: how fast a call moves P2P -> SFU and back, and how long media stops.

Starts its own nats-server, two gateways, one media node and one mode selector (loopback,
free ports). A GROUP call of two (alice on gateway A, bob on gateway B) runs P2P; then,
``--rounds`` times: carol joins (2 -> 3, the call moves to the SFU), carol leaves (3 -> 2,
back to P2P). Measured per direction, at the clients (aiortc, audio + 160x120 video):

- **switch time**: from the triggering join/leave to every participant receiving audio and
  video from every other participant over the new path (p50, p95, max);
- **longest gap** in received video and audio at any participant who was in the call
  before the switch (both paths count: make-before-break means the old path keeps
  carrying media until the new one does);

for cold switches and for pre-warmed ones (participants hold idle SFU sessions while P2P),
in alternating blocks of rounds (the selector is restarted between blocks with pre-warm
off, then on), so both are measured on the same machine in the same run.

The selector's hold before going back to P2P (``SELECTOR_TO_P2P_HOLD_S``, 5 s by default,
so a drop-and-rejoin does not migrate twice) is set to 0 here: the 3 -> 2 figures are the
migration itself; in production add the hold.

The last line is one JSON object: ``to_sfu_p95_s``, ``to_sfu_prewarmed_p95_s``,
``to_p2p_p95_s``, ``max_video_gap_ms``, ``max_audio_gap_ms`` and more. ``--quick``: 4 rounds.
"""

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stats import pct, summary
from tests.support.call_stack import CallStack
from tests.support.nats_server import NatsServer

WORKER = str(Path(__file__).resolve().parent / "client_worker.py")
BENCH_ENV = {
    "RATE_DEFAULT_PER_S": "100000",
    "RATE_DEFAULT_BURST": "100000",
    "RATE_SIGNAL_PER_S": "100000",
    "RATE_SIGNAL_BURST": "100000",
    "CALL_HEARTBEAT_TIMEOUT_S": "60",
    "CALL_RING_TIMEOUT_S": "60",
    "LOG_LEVEL": "warning",
}
SELECTOR = {"SELECTOR_TO_P2P_HOLD_S": "0", "SELECTOR_MIGRATION_DEADLINE_S": "10"}
#: Each participant is its own process (see client_worker.py): 15 fps video, the SFU slots'
#: packets counted rather than decoded (the tests check pictures; this measures time).
CLIENT: dict[str, Any] = {"video_fps": 15.0, "decode_sfu": False}


class Participant:
    """A call participant in a worker process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.participant_id = ""

    async def start(self) -> "Participant":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            WORKER,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # a state reply lists every packet arrival of a round
        )
        return self

    async def do(self, cmd: str, **fields: Any) -> Any:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"{self.name}: the worker exited")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"{self.name}: {cmd}: {reply['error']}")
        return reply["result"]

    async def state(self, since: float) -> dict[str, Any]:
        state: dict[str, Any] = await self.do("state", since=since)
        self.participant_id = state["participantId"] or self.participant_id
        return state

    async def close(self) -> None:
        if self.proc is None:
            return
        try:
            await self.do("close")
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
            await self.proc.wait()


def ready_at(state: dict[str, Any], since: float, path: str) -> float | None:
    """When this participant had both kinds from every other participant over ``path``."""
    firsts: dict[tuple[str, str], float] = {}
    for t, who, kind, p in state["arrivals"]:
        if p == path and t >= since and (who, kind) not in firsts:
            firsts[(who, kind)] = t
    wanted = [(who, kind) for who in state["others"] for kind in ("audio", "video")]
    if any(w not in firsts for w in wanted):
        return None
    return max(firsts[w] for w in wanted)


async def switch_time(people: list[Participant], since: float, path: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        times = [ready_at(await p.state(since), since, path) for p in people]
        if all(t is not None for t in times):
            return max(t for t in times if t is not None) - since
        if time.monotonic() > deadline:
            raise TimeoutError(f"not everyone over {path}")
        await asyncio.sleep(0.02)


def max_gap_ms(state: dict[str, Any], since: float, until: float, kind: str) -> float:
    """The longest gap in ``kind`` media from any other participant, over any path."""
    worst = 0.0
    for who in state["others"]:
        times = sorted(t for t, w, k, _ in state["arrivals"] if w == who and k == kind)
        inside = [t for t in times if since <= t <= until]
        before = [t for t in times if t < since]
        points = ([before[-1]] if before else []) + inside
        for a, b in itertools.pairwise(points):
            worst = max(worst, (b - a) * 1000)
    return worst


async def gaps(people: list[Participant], since: float, until: float) -> tuple[float, float]:
    states = [await p.state(since - 2.0) for p in people]
    video = max(max_gap_ms(s, since, until, "video") for s in states)
    audio = max(max_gap_ms(s, since, until, "audio") for s in states)
    return video, audio


async def until_true(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def one_round(
    stack: CallStack,
    *,
    call_id: str,
    carol_token: str,
    carol_url: str,
    a: Participant,
    b: Participant,
    prewarmed: bool,
) -> dict[str, float]:
    if prewarmed:
        for x in (a, b):

            async def warm(x: Participant = x) -> bool:
                return bool((await x.state(time.monotonic()))["sfuReady"])

            await until_true(warm, 20)
    carol = await Participant("carol").start()
    await carol.do("connect", url=carol_url, token=carol_token, name="carol",
                   colour=[40, 40, 220], options=CLIENT)  # fmt: skip
    t0 = time.monotonic()
    await carol.do("join", callId=call_id)
    to_sfu = await switch_time([a, b, carol], t0, "sfu", 20)
    # Those already in the call: when alice and bob had each other through the SFU (what
    # pre-warm speeds up; carol, new to the call, brings up her legs cold either way).
    pair = []
    for x, other in ((a, b), (b, a)):
        state = await x.state(t0)
        firsts = [
            t
            for kind in ("audio", "video")
            for t in [
                min(
                    (
                        t
                        for t, w, k, p in state["arrivals"]
                        if p == "sfu" and w == other.participant_id and k == kind
                    ),
                    default=None,
                )
            ]
            if t is not None
        ]
        pair.append(max(firsts) - t0 if len(firsts) == 2 else to_sfu)
    existing = max(pair)
    for x in (a, b, carol):
        await x.do("wait_mode", mode="sfu")
    settled = time.monotonic()
    await asyncio.sleep(0.6)  # the gap window runs past the commit (the old path's close)
    v1, a1 = await gaps([a, b], t0 - 0.5, settled + 0.5)
    t1 = time.monotonic()
    carol_id = (await carol.state(t1))["participantId"]
    await carol.do("leave")
    for x in (a, b):
        await x.do("forget", participantId=carol_id)
    to_p2p = await switch_time([a, b], t1, "p2p", 20)
    for x in (a, b):
        await x.do("wait_mode", mode="p2p")
    settled = time.monotonic()
    await asyncio.sleep(0.6)
    v2, a2 = await gaps([a, b], t1 - 0.5, settled + 0.5)
    await carol.close()
    return {
        "to_sfu_s": to_sfu,
        "to_sfu_existing_s": existing,
        "to_p2p_s": to_p2p,
        "sfu_video_gap_ms": v1,
        "sfu_audio_gap_ms": a1,
        "p2p_video_gap_ms": v2,
        "p2p_audio_gap_ms": a2,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_node_cpu(pid: int, seconds: float = 3.0) -> float:
    """The media node's CPU (fraction of one core) over a few seconds of a P2P call."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="rounds per direction and mode")
    parser.add_argument("--block", type=int, default=5, help="rounds per alternating block")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 4 if args.quick else args.rounds
    block = 2 if args.quick else args.block
    server = NatsServer().start()
    stack = CallStack(server.url, gateways=2, selectors=0, media_nodes=1, env=BENCH_ENV)
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    # What pre-warm costs the media node: its CPU while the pair is P2P (idle sessions held
    # or not), sampled once per block.
    node_cpu: dict[bool, list[float]] = {False: [], True: []}
    try:
        await asyncio.to_thread(stack.start_all)
        order = [False, True] * (-(-rounds // block))
        print(f"migration bench: {rounds} rounds cold and {rounds} pre-warmed, blocks of {block}")
        for prewarm in order:
            for s in stack.of_kind("selector"):
                stack.kill_service(s.service_id)
            stack.selector_env = {
                **stack.selector_env,
                **SELECTOR,
                "SELECTOR_PREWARM": "true" if prewarm else "false",
            }
            await asyncio.to_thread(stack.add, "selector")
            tag = f"{len(results[prewarm])}-{prewarm:d}-{time.time_ns() % 10**9}"
            conv = f"bench-{tag}"
            users = [f"alice-{tag}", f"bob-{tag}"]
            # The carols who will come and go (pre-warm applies: more than two members).
            carols = [f"carol{i}-{tag}" for i in range(rounds)]
            stack.put_conversation(conv, "GROUP", [*users, *carols])
            a = await Participant("alice").start()
            b = await Participant("bob").start()
            await a.do("connect", url=stack.urls[0], token=stack.token(users[0]),
                       name="alice", options=CLIENT)  # fmt: skip
            await b.do("connect", url=stack.urls[1], token=stack.token(users[1]),
                       name="bob", colour=[220, 40, 40], options=CLIENT)  # fmt: skip
            call_id = (await a.do("initiate", conversation=conv))["callId"]
            await b.do("accept", callId=call_id)
            t = time.monotonic()
            await switch_time([a, b], t, "p2p", 20)
            if prewarm:
                for x in (a, b):

                    async def held(x: Participant = x) -> bool:
                        return bool((await x.state(time.monotonic()))["sfuReady"])

                    await until_true(held, 20)
            node_pid = stack.of_kind("media_node")[0].process.pid
            node_cpu[prewarm].append(await idle_node_cpu(node_pid))
            for _ in range(block):
                if len(results[prewarm]) >= rounds:
                    break
                n = len(results[prewarm])
                row = await one_round(
                    stack,
                    call_id=call_id,
                    carol_token=stack.token(carols[n]),
                    carol_url=stack.urls[n % 2],
                    a=a,
                    b=b,
                    prewarmed=prewarm,
                )
                results[prewarm].append(row)
                print(
                    f"  {'warm' if prewarm else 'cold'} #{n + 1:2d}: "
                    f"to SFU {row['to_sfu_s']:.3f} s, "
                    f"to P2P {row['to_p2p_s']:.3f} s, video gaps {row['sfu_video_gap_ms']:.0f}/"
                    f"{row['p2p_video_gap_ms']:.0f} ms, audio gaps {row['sfu_audio_gap_ms']:.0f}/"
                    f"{row['p2p_audio_gap_ms']:.0f} ms",
                    flush=True,
                )
            await a.close()
            await b.close()
    finally:
        await asyncio.to_thread(stack.stop)
        server.cleanup()

    cold, warm = results[False], results[True]
    every = cold + warm
    out: dict[str, Any] = {
        "rounds": rounds,
        "to_sfu": summary([r["to_sfu_s"] for r in cold]),
        "to_sfu_prewarmed": summary([r["to_sfu_s"] for r in warm]),
        "to_p2p": summary([r["to_p2p_s"] for r in every]),
        "to_sfu_existing": summary([r["to_sfu_existing_s"] for r in cold]),
        "to_sfu_prewarmed_existing": summary([r["to_sfu_existing_s"] for r in warm]),
        "to_sfu_p95_s": summary([r["to_sfu_s"] for r in cold])["p95"],
        "to_sfu_prewarmed_p95_s": summary([r["to_sfu_s"] for r in warm])["p95"],
        "to_p2p_p95_s": summary([r["to_p2p_s"] for r in every])["p95"],
        "max_video_gap_ms": round(
            max(max(r["sfu_video_gap_ms"], r["p2p_video_gap_ms"]) for r in every), 1
        ),
        "max_audio_gap_ms": round(
            max(max(r["sfu_audio_gap_ms"], r["p2p_audio_gap_ms"]) for r in every), 1
        ),
        "video_gap_p95_ms": round(
            pct([max(r["sfu_video_gap_ms"], r["p2p_video_gap_ms"]) for r in every], 0.95), 1
        ),
        "node_cpu_p2p_cold": round(statistics.median(node_cpu[False]), 4),
        "node_cpu_p2p_prewarmed": round(statistics.median(node_cpu[True]), 4),
        "prewarmed_over_cold_to_sfu_p50": round(
            statistics.median(r["to_sfu_s"] for r in warm)
            / statistics.median(r["to_sfu_s"] for r in cold),
            3,
        ),
    }
    print(
        f"to SFU (cold):       p50 {out['to_sfu']['p50']:.3f} s  p95 {out['to_sfu']['p95']:.3f} s  "
        f"max {out['to_sfu']['max']:.3f} s   (goal p95 < 1 s)"
    )
    print(
        f"to SFU (pre-warmed): p50 {out['to_sfu_prewarmed']['p50']:.3f} s  "
        f"p95 {out['to_sfu_prewarmed']['p95']:.3f} s  max {out['to_sfu_prewarmed']['max']:.3f} s"
        "   (goal p95 < 0.3 s)"
    )
    print(
        f"  of which alice and bob (already in the call) had each other through the SFU: "
        f"cold p50 {out['to_sfu_existing']['p50']:.3f} s "
        f"p95 {out['to_sfu_existing']['p95']:.3f} s, "
        f"pre-warmed p50 {out['to_sfu_prewarmed_existing']['p50']:.3f} s "
        f"p95 {out['to_sfu_prewarmed_existing']['p95']:.3f} s"
    )
    print(
        f"to P2P:              p50 {out['to_p2p']['p50']:.3f} s  p95 {out['to_p2p']['p95']:.3f} s  "
        f"max {out['to_p2p']['max']:.3f} s   (goal p95 < 1 s; plus the configured hold)"
    )
    print(
        f"longest gap at anyone: video {out['max_video_gap_ms']:.0f} ms (goal < 250), "
        f"audio {out['max_audio_gap_ms']:.0f} ms"
    )
    print(
        f"pre-warm's cost at the media node while the pair is P2P: "
        f"{out['node_cpu_p2p_prewarmed'] * 100:.1f} % of a core with idle sessions held, "
        f"{out['node_cpu_p2p_cold'] * 100:.1f} % without"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
