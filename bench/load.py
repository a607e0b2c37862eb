"""Load: what one gateway holds, a 50-person call under churn, the selector and archive lag.

Bounded and loopback only: its own nats-server, two gateways, a mode selector, a media node,
the archive and its nx-27017 (free ports, temporary directories).

1. **Idle sockets.** Helper processes (``--hold``) open N authenticated Socket.IO sockets
   to gateway A (:mod:`tests.support.light_socket`: Engine.IO over a WebSocket, every
   server ping answered) and keep them idle. Measured on gateway A's process: memory per
   socket (RSS after minus before, over N), idle CPU over a window longer than Socket.IO's
   ping interval (so every socket is pinged), how many sockets the gateway itself counts
   (its heartbeat's ``sockets``). Then a signal relay between two gateways (a participant
   on A, one on B, ``call:signal`` each way, one-way time, sequential samples), with the N
   sockets held and, in the same run, before they were connected.
2. **A 50-person GROUP call under churn.** 50 participants (half on each gateway; Socket.IO
   clients that take part in signaling only: a switch to the SFU is acknowledged at once,
   the media plane is ``bench/sfu_scale.py``'s) join in bursts; the mode selector moves the
   call to the SFU. Then rounds of bursts: participants leave while others join, at the
   same moment. Checked at the end: the call's live state (status, mode, no migration left,
   exactly the participants who are in), every participant's own view (who else is in,
   from the notices it got), and the call's events in ``CALL_EVENTS`` (``seq`` 1..N with no
   gap or repeat, and their replay gives the same participants).
3. **Selector and archive lag.** Load processes (``--churn``) run the gateways' own call
   operations (``gateway.calls.CallService``: the same compare-and-set writes and outbox)
   on many GROUP calls, joining and leaving at a set rate, in bursts of rising rate. The
   selector's and the archive's durable consumers are polled meanwhile; an event's lag is
   from its publication (its JetStream timestamp) to the consumer's acknowledgement floor
   passing it. Per burst: events per second achieved, lag p50/p99/max, whether it grows
   (the second half of the burst against the first), and how long the backlog took to
   drain after the burst.

The last line is one JSON object: ``sockets_held``, ``relay_p99_ms_loaded``,
``kb_per_socket``, ``selector_lag_p99_ms`` and the other figures.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.relay import relay_samples, token_for
from bench.stats import pct
from gateway.call_store import CallStore
from gateway.calls import CallService
from gateway.conversations import Conversations
from gateway.errors import CallError
from gateway.settings import GatewaySettings
from gateway.tokens import Principal
from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.call_events import AnyCallEvent, CallModeChanged, ParticipantJoined, ParticipantLeft
from schemas.call_state import ActiveCallClaim, CallState, ConversationMember, ConversationRecord
from schemas.codec import decoder_for
from schemas.heartbeat import ServiceHeartbeat
from schemas.kv import TypedKv
from schemas.settings import BusSettings
from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack
from tests.support.gateways import JWT_SECRET, GatewayCluster
from tests.support.light_socket import LightSocket, LightStats, open_many
from tests.support.mongo_server import MongoServer
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually

ROOT = str(Path(__file__).resolve().parents[1])
SCRIPT = str(Path(__file__).resolve())
BENCH_ENV = {
    # Every simulated client connects from 127.0.0.1: one address bucket would hold them
    # to 2 connects a second (the limit is for one real client, not ten thousand).
    "RATE_CONNECT_PER_S": "100000",
    "RATE_CONNECT_BURST": "100000",
    "RATE_SIGNAL_PER_S": "100000",
    "RATE_SIGNAL_BURST": "100000",
    "RATE_INITIATE_PER_S": "1000",
    "RATE_INITIATE_BURST": "1000",
    "RATE_DEFAULT_PER_S": "100000",
    "RATE_DEFAULT_BURST": "100000",
    "CALL_HEARTBEAT_INTERVAL_S": "5",
    "CALL_HEARTBEAT_TIMEOUT_S": "120",
    "CALL_RECONNECT_GRACE_S": "30",
    "CALL_RING_TIMEOUT_S": "30",
    "HEARTBEAT_INTERVAL_S": "1",
    "LOG_LEVEL": "warning",
}


# --- helper process: idle sockets -------------------------------------------------------------
async def hold_main(url: str, prefix: str, count: int) -> None:
    """Hold ``count`` idle sockets (user ``<prefix>-<i>`` each) and answer on stdin:
    ``stats`` -> one JSON line; end of input -> close them all and exit."""
    stats = LightStats()
    sockets = [LightSocket(url, token_for(f"{prefix}-{i}"), stats=stats) for i in range(count)]
    await open_many(sockets, concurrency=32)
    print(json.dumps({"ready": stats.as_dict()}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"stats":
            print(json.dumps({"stats": stats.as_dict()}), flush=True)
    gate = asyncio.Semaphore(256)

    async def close(s: LightSocket) -> None:
        async with gate:
            await s.close()

    await asyncio.gather(*(close(s) for s in sockets))


class Holder:
    """The orchestrator's handle on one ``--hold`` process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, prefix: str, count: int) -> "Holder":
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--hold",
            url,
            prefix,
            str(count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        return cls(proc)

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("a socket-holding process died")
        out: dict[str, Any] = json.loads(line)
        return out

    async def stats(self) -> dict[str, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        return dict((await self.read(30))["stats"])

    async def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 120)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


def summed(rows: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        for k, v in row.items():
            out[k] = out.get(k, 0) + v
    return out


# --- measurements -----------------------------------------------------------------------------
class GatewayMeter:
    """CPU and memory of one gateway process, and what its own heartbeat says."""

    def __init__(self, pid: int) -> None:
        self.ps = psutil.Process(pid)
        self.last_beat: ServiceHeartbeat | None = None

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    async def cpu(self, window: float) -> float:
        """CPU-seconds per second over ``window`` (1.0 = one core)."""
        before, started = self.cpu_s(), time.monotonic()
        await asyncio.sleep(window)
        return (self.cpu_s() - before) / (time.monotonic() - started)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    async def on_beat(self, beat: ServiceHeartbeat, _: Incoming) -> None:
        self.last_beat = beat

    def sockets(self) -> int:
        return int(self.last_beat.load.extra.get("sockets", 0)) if self.last_beat else 0


async def profile(pid: int, seconds: float, tag: str) -> asyncio.subprocess.Process | None:
    """``BENCH_PROFILE_DIR``: sample the process with py-spy (collapsed stacks), if present."""
    where = os.environ.get("BENCH_PROFILE_DIR")
    spy = Path(sys.executable).with_name("py-spy")
    if not where or not spy.exists():
        return None
    os.makedirs(where, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        str(spy),
        "record",
        "-p",
        str(pid),
        "-d",
        str(int(seconds)),
        "-r",
        "200",
        "-f",
        "raw",
        "-o",
        str(Path(where) / f"{tag}.txt"),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def part_sockets(
    args: argparse.Namespace, server: NatsServer, cluster: GatewayCluster, bus: Bus
) -> dict[str, Any]:
    gw = cluster.gateways[0]
    meter = GatewayMeter(gw.process.pid)
    await bus.subscribe(
        subjects.service_heartbeat("gateway", gw.service_id), ServiceHeartbeat, meter.on_beat
    )
    relay_idle = await relay_samples(cluster, "before", args.samples)
    print(
        f"  relay with no idle sockets: p50 {pct(relay_idle, 0.5):.2f} ms  "
        f"p99 {pct(relay_idle, 0.99):.2f} ms"
    )
    empty_cpu = await meter.cpu(args.window / 3)
    rss0 = meter.rss()
    per = -(-args.sockets // args.holders)
    t0 = time.monotonic()
    holders = [
        await Holder.start(gw.url, f"idle{i}", min(per, args.sockets - i * per))
        for i in range(args.holders)
    ]
    out: dict[str, Any] = {}
    try:
        ready = summed([(await h.read(600))["ready"] for h in holders])
        connect_s = time.monotonic() - t0
        print(
            f"  {ready['connected']} sockets connected in {connect_s:.1f}s "
            f"({ready['connected'] / connect_s:.0f}/s; refused {ready['refused']}, "
            f"failed {ready['failed']})"
        )
        await asyncio.sleep(2)  # the heartbeat catches up
        rss1 = meter.rss()
        spy = await profile(gw.process.pid, args.window, "idle")
        idle_cpu = await meter.cpu(args.window)
        if spy is not None:
            await spy.wait()
        stats = summed([await h.stats() for h in holders])
        held = stats["connected"] - stats["closed"]
        print(
            f"  idle for {args.window:.0f}s: gateway CPU {idle_cpu * 100:.1f}% of a core "
            f"(empty {empty_cpu * 100:.1f}%), pings answered {stats['pings']}, "
            f"sockets still open {held}, gateway counts {meter.sockets()}"
        )
        kb = (rss1 - rss0) / max(1, ready["connected"]) / 1024
        print(f"  memory: {rss0 / 2**20:.0f} MB -> {rss1 / 2**20:.0f} MB, {kb:.1f} KB per socket")
        relay = await relay_samples(cluster, "loaded", args.samples)
        print(
            f"  relay A <-> B with {held} idle sockets on A: p50 {pct(relay, 0.5):.2f} ms  "
            f"p99 {pct(relay, 0.99):.2f} ms  max {max(relay):.2f} ms"
        )
        stats = summed([await h.stats() for h in holders])
        out = {
            "sockets_target": args.sockets,
            "sockets_connected": ready["connected"],
            "sockets_held": min(stats["connected"] - stats["closed"], meter.sockets()),
            "sockets_refused": ready["refused"] + ready["failed"],
            "connect_per_s": round(ready["connected"] / connect_s, 1),
            "kb_per_socket": round(kb, 2),
            "gateway_rss_mb": round(rss1 / 2**20, 1),
            "idle_cpu_core": round(idle_cpu, 4),
            "empty_cpu_core": round(empty_cpu, 4),
            "pings_answered": stats["pings"],
            "relay_p50_ms_loaded": round(pct(relay, 0.5), 3),
            "relay_p99_ms_loaded": round(pct(relay, 0.99), 3),
            "relay_max_ms_loaded": round(max(relay), 3),
            "relay_p50_ms_unloaded": round(pct(relay_idle, 0.5), 3),
            "relay_p99_ms_unloaded": round(pct(relay_idle, 0.99), 3),
        }
    finally:
        t1 = time.monotonic()
        await asyncio.gather(*(h.stop() for h in holders))
        closed_s = time.monotonic() - t1
        # The gateway works through the disconnects after the clients are gone (presence,
        # rooms): the next part starts once its own count is back to (about) zero.
        with contextlib.suppress(TimeoutError):
            await eventually(lambda: meter.sockets() <= 2, timeout=180, step=0.5)
        released_s = time.monotonic() - t1
        out["sockets_released_s"] = round(released_s, 1)
        print(
            f"  sockets closed in {closed_s:.1f}s; the gateway counts {meter.sockets()} "
            f"after {released_s:.1f}s"
        )
    return out


# --- part 2: a 50-person call ----------------------------------------------------------------
class SignalingParticipant(CallClient):
    """A participant without media: it follows the call through its notices and
    acknowledges a switch to the SFU at once (the media plane is not under test here)."""

    def __init__(self, url: str, token: str, name: str) -> None:
        super().__init__(url, token, name=name, media=False)
        self.switches_acked = 0
        #: Who else is in, as this participant knows it: the join's view, then the notices.
        self.view: set[str] = set()
        #: Notices that arrived before the join's acknowledgement (events can overtake
        #: acks): applied, in order, on top of the view the acknowledgement carries.
        self._early: list[tuple[str, str]] | None = None

    async def join(
        self,
        call_id: str,
        resume_token: str | None = None,
        *,
        language: str | None = None,
        caption_language: str | None = None,
    ) -> dict[str, Any]:
        self._early = []
        self.call_id = call_id  # notices of this call are kept from now on
        try:
            ack = await super().join(
                call_id, resume_token, language=language, caption_language=caption_language
            )
            self.view = {
                p["participantId"]
                for p in ack["call"]["participants"]
                if p["participantId"] != ack["participantId"]
            }
            for kind, who in self._early:
                self._apply(kind, who)
            return ack
        finally:
            self._early = None

    async def initiate(
        self,
        conversation_id: str,
        media: str = "video",
        *,
        language: str | None = None,
        caption_language: str | None = None,
    ) -> dict[str, Any]:
        ack = await super().initiate(
            conversation_id, media, language=language, caption_language=caption_language
        )
        self.view = set()
        return ack

    def _apply(self, kind: str, who: str) -> None:
        if who == self.participant_id:
            return
        if kind == "joined":
            self.view.add(who)
        else:
            self.view.discard(who)

    async def _on_event(self, event: str, data: Any = None) -> None:
        await super()._on_event(event, data)
        payload = data if isinstance(data, dict) else {}
        change = None
        if event == "call:participant-joined":
            change = ("joined", str(payload.get("participant", {}).get("participantId")))
        elif event == "call:participant-left":
            change = ("left", str(payload.get("participantId")))
        if change is not None and payload.get("callId") == self.call_id:
            if self._early is not None:
                self._early.append(change)
            else:
                self._apply(*change)
        if event == "call:mode-switch" and payload.get("kind") == "migration":
            self._spawn(self._ack_switch(payload))
        elif event == "call:mode-changed" and payload.get("outcome") == "completed":
            self.mode = str(payload.get("toMode"))

    async def _ack_switch(self, payload: dict[str, Any]) -> None:
        await self._in_call()
        with contextlib.suppress(Exception):
            await self.request(
                "call:mode-switched",
                {
                    "callId": self.call_id,
                    "epoch": payload["epoch"],
                    "mode": payload["mode"],
                    "ok": True,
                    "maxGapMs": 0.0,
                },
            )
            self.switches_acked += 1

    @property
    def in_call(self) -> bool:
        return self.participant_id is not None


async def timed(coro: Any) -> float:
    t0 = time.monotonic()
    await coro
    return (time.monotonic() - t0) * 1000


async def call_events(bus: Bus, call_id: str, count: int, timeout: float = 30) -> list[Any]:
    """Every event of ``call_id`` in ``CALL_EVENTS``, in stream order (``count`` expected)."""
    got: list[Any] = []
    done = asyncio.Event()
    decoder: msgspec.json.Decoder[AnyCallEvent] = decoder_for(AnyCallEvent)

    async def on_msg(msg: Msg) -> None:
        got.append(decoder.decode(msg.data))
        if len(got) >= count:
            done.set()

    sub = await bus.js.subscribe(
        subjects.call_events_of(call_id),
        stream=subjects.CALL_EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        cb=on_msg,
    )
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        await asyncio.sleep(0.5)  # anything beyond ``count`` (there should be none)
    finally:
        await sub.unsubscribe()
    return got


def replayed(events: list[Any]) -> set[str]:
    """The participants in the call after these events, replayed in order."""
    inside: set[str] = set()
    for e in events:
        if isinstance(e, ParticipantJoined):
            inside.add(e.participant.participant_id)
        elif isinstance(e, ParticipantLeft):
            inside.discard(e.participant_id)
    return inside


async def part_call(args: argparse.Namespace, stack: CallStack, bus: Bus) -> dict[str, Any]:
    n, spare = args.participants, args.churn
    users = [f"grp-{i:03d}" for i in range(n + spare)]
    conv = "load-group"
    stack.put_conversation(conv, "GROUP", users, roles={users[0]: "admin"})
    urls = stack.urls
    clients = [
        SignalingParticipant(urls[i % len(urls)], token_for(u), name=u) for i, u in enumerate(users)
    ]
    calls_kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    out: dict[str, Any] = {}
    try:
        for start in range(0, len(clients), 20):
            await asyncio.gather(*(c.open() for c in clients[start : start + 20]))
        host = clients[0]
        call_id = (await host.initiate(conv, media="audio"))["call"]["callId"]
        joining = clients[1:n]
        join_ms: list[float] = []
        t0 = time.monotonic()
        for start in range(0, len(joining), args.burst):
            join_ms += await asyncio.gather(
                *(timed(c.join(call_id)) for c in joining[start : start + args.burst])
            )
        fill_s = time.monotonic() - t0

        async def settled(expected: set[str]) -> CallState:
            async def ok() -> bool:
                entry = await calls_kv.get(call_id)
                if entry is None:
                    return False
                st = entry.value
                return (
                    st.mode == "sfu"
                    and st.migration is None
                    and {p.principal_id for p in st.participants} == expected
                )

            await eventually(ok, timeout=60, step=0.1)
            entry = await calls_kv.get(call_id)
            assert entry is not None
            final: CallState = entry.value
            return final

        inside = {c.name for c in clients[:n]}
        state = await settled(inside)
        print(
            f"  {n} joined in bursts of {args.burst} in {fill_s:.1f}s (join ack p50 "
            f"{pct(join_ms, 0.5):.0f} ms, p99 {pct(join_ms, 0.99):.0f} ms); mode {state.mode}, "
            f"epoch {state.epoch}"
        )
        rng = random.Random(13)
        leave_ms: list[float] = []
        churn_ms: list[float] = []
        full_refused = 0
        for _ in range(args.rounds):
            present = [c for c in clients if c.in_call]
            absent = [c for c in clients if not c.in_call]
            leaving = rng.sample([c for c in present if c is not host], spare)
            entering = absent[:spare]
            for c in leaving:
                c.participant_id = None

            left = asyncio.Event()

            async def leave(c: SignalingParticipant) -> None:
                assert c.call_id is not None
                await c._must("call:leave", {"callId": c.call_id})
                c.participant_id = None

            async def leaves(them: list[SignalingParticipant], left: asyncio.Event) -> list[float]:
                try:
                    return list(await asyncio.gather(*(timed(leave(c)) for c in them)))
                finally:
                    left.set()

            async def enter(c: SignalingParticipant, left: asyncio.Event) -> None:
                # A join that commits before the leaves finds the call full (50): the right
                # refusal, not corruption; the participant tries again once they are out.
                nonlocal full_refused
                try:
                    await c.join(call_id)
                except AssertionError as exc:
                    if "the call is full" not in str(exc):
                        raise
                    full_refused += 1
                    await left.wait()
                    await c.join(call_id)

            t_round = time.monotonic()
            # Leaves and joins at the same moment: every one is a compare-and-set on the
            # same call entry.
            joins = [asyncio.ensure_future(enter(c, left)) for c in entering]
            leave_ms += await leaves(leaving, left)
            await asyncio.gather(*joins)
            churn_ms.append((time.monotonic() - t_round) * 1000)
            inside = {c.name for c in clients if c.in_call}
        state = await settled(inside)
        ids = {p.participant_id for p in state.participants}
        views_ok = 0

        def view_matches(c: SignalingParticipant) -> bool:
            return c.view == ids - {c.participant_id or ""}

        present = [c for c in clients if c.in_call]
        with contextlib.suppress(TimeoutError):
            await eventually(lambda: all(view_matches(c) for c in present), timeout=20)
        views_ok = sum(1 for c in present if view_matches(c))
        events = await call_events(bus, call_id, state.seq)
        seqs = [e.seq for e in events]
        stream_ok = seqs == list(range(1, state.seq + 1))
        replay_ok = replayed(events) == ids
        migrations = sum(1 for e in events if isinstance(e, CallModeChanged))
        print(
            f"  {args.rounds} rounds of {spare} leaving while {spare} join: round p50 "
            f"{pct(churn_ms, 0.5):.0f} ms, p99 {pct(churn_ms, 0.99):.0f} ms; "
            f"leave ack p99 {pct(leave_ms, 0.99):.0f} ms; joins refused as full (then "
            f"admitted once the leaves were in) {full_refused}"
        )
        print(
            f"  final: {len(state.participants)} in, mode {state.mode}, status {state.status}, "
            f"migrations {migrations}; views correct {views_ok}/{len(present)}; "
            f"stream seq 1..{state.seq} {'ok' if stream_ok else 'BROKEN'} ({len(events)} events), "
            f"replay {'matches' if replay_ok else 'DIFFERS'}"
        )
        out = {
            "call_participants": len(state.participants),
            "call_mode": state.mode,
            "call_status": state.status,
            "call_events": len(events),
            "call_mode_changes": migrations,
            "call_views_correct": views_ok,
            "call_stream_contiguous": stream_ok,
            "call_replay_matches": replay_ok,
            "call_state_ok": len(state.participants) == n
            and state.mode == "sfu"
            and state.status == "active"
            and stream_ok
            and replay_ok
            and views_ok == len(present),
            "call_join_ack_p99_ms": round(pct(join_ms, 0.99), 1),
            "call_churn_round_p99_ms": round(pct(churn_ms, 0.99), 1),
            "call_fill_s": round(fill_s, 2),
            "call_joins_refused_full": full_refused,
        }
        with contextlib.suppress(Exception):
            await host.end()
    finally:
        for start in range(0, len(clients), 20):
            await asyncio.gather(
                *(c.close() for c in clients[start : start + 20]), return_exceptions=True
            )
    return out


# --- part 3: selector and archive lag ----------------------------------------------------------
class Churn:
    """One load process's calls (``--churn``): the gateways' own call operations, without
    sockets, joining and leaving at a set rate."""

    def __init__(self, bus: Bus, settings: GatewaySettings, index: int, calls: int) -> None:
        self.bus = bus
        self.settings = settings
        self.index = index
        self.calls = calls
        self.members = 6
        #: Per call: its id, its conversation's members, who is in (principal -> pid).
        self.states: list[tuple[str, list[str], dict[str, str]]] = []
        self.ops = 0
        self.errors: dict[str, int] = {}

    async def setup(self) -> None:
        b = self.bus
        self.store = CallStore(
            b,
            await b.kv(subjects.CALLS_BUCKET, CallState),
            await b.kv(subjects.CALL_CLAIMS_BUCKET, ActiveCallClaim),
        )
        self.conversations = Conversations(
            await b.kv(subjects.CONVERSATIONS_BUCKET, ConversationRecord)
        )
        self.service = CallService(self.settings, self.store, self.conversations, None)
        gate = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            conv = f"churn-{self.index}-{i}"
            users = [f"{conv}-u{k}" for k in range(self.members)]
            async with gate:
                await self.conversations.put(
                    ConversationRecord(
                        conversation_id=conv,
                        type="GROUP",
                        members=[ConversationMember(user_id=u) for u in users],
                    )
                )
                joined = await self.service.start(self.who(users[0]), conv, "audio")
                inside = {users[0]: joined.participant_id}
                self.states.append((joined.outcome.call_id, users, inside))

        await asyncio.gather(*(one(i) for i in range(self.calls)))

    @staticmethod
    def who(user: str) -> Principal:
        return Principal(principal_id=user, kind="user", display_name=user)

    async def step(self, k: int, rng: random.Random) -> None:
        call_id, users, inside = self.states[k]
        # Between 1 and 4 in (the initiator stays): across the P2P/SFU line both ways.
        if len(inside) <= 1 or (len(inside) < 4 and rng.random() < 0.5):
            user = rng.choice([u for u in users if u not in inside])
            joined = await self.service.join(self.who(user), call_id)
            inside[user] = joined.participant_id
        else:
            user = rng.choice([u for u in inside if u != users[0]])
            await self.service.leave(self.who(user), call_id, inside[user])
            del inside[user]

    async def burst(self, rate: float, seconds: float) -> dict[str, Any]:
        """``rate`` operations per second for ``seconds``; each call at most one at a time."""
        rng = random.Random(self.index * 7919 + int(rate))
        busy: set[int] = set()
        tasks: set[asyncio.Task[None]] = set()
        done = 0
        started = time.monotonic()

        async def op(k: int) -> None:
            nonlocal done
            try:
                await self.step(k, rng)
                done += 1
            except CallError as exc:
                name = f"CallError:{exc.code}: {exc.message}"
                self.errors[name] = self.errors.get(name, 0) + 1
            except Exception as exc:
                name = type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
            finally:
                busy.discard(k)

        issued = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) - issued
            for _ in range(max(0, due)):
                free = [k for k in range(len(self.states)) if k not in busy]
                if not free or len(tasks) >= 512:
                    break
                k = rng.choice(free)
                busy.add(k)
                issued += 1
                t = asyncio.get_running_loop().create_task(op(k))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks, return_exceptions=True)
        took = time.monotonic() - started
        self.ops += done
        return {"ops": done, "issued": issued, "seconds": took, "errors": dict(self.errors)}


async def churn_main(nats_url: str, index: int, calls: int) -> None:
    # These participants have no socket, so no presence heartbeat: the gateways' sweepers
    # would remove them after the heartbeat timeout; the churn is about the event flow.
    settings = GatewaySettings(
        nats_url=nats_url,
        jwt_secret=JWT_SECRET,
        call_ring_timeout_s=3600.0,
        call_heartbeat_timeout_s=3600.0,
    )
    bus = await Bus.connect(settings, f"bench-churn-{index}")
    churn = Churn(bus, settings, index, calls)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await churn.setup()
    print(json.dumps({"ready": len(churn.states)}), flush=True)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "burst":
            print(json.dumps(await churn.burst(cmd["rate"], cmd["seconds"])), flush=True)
    await bus.close()


class ConsumerLag:
    """Polls one durable consumer; after the fact, each event's lag: from its publication
    to the consumer's acknowledgement floor passing it."""

    def __init__(self, bus: Bus, durable: str, interval_s: float = 0.01) -> None:
        self.bus = bus
        self.durable = durable
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, int]] = []  # wall time, ack floor, pending
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                info = await self.bus.js.consumer_info(subjects.CALL_EVENTS_STREAM, self.durable)
                floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
                pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                self.samples.append((time.time(), floor, pending))
            except Exception:
                pass
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def lags(self, published: dict[int, float], since: float, until: float) -> list[float]:
        """Lag (ms) of each event published in [since, until)."""
        out: list[float] = []
        seqs = sorted(s for s, t in published.items() if since <= t < until)
        i = 0
        for t, floor, _ in self.samples:
            while i < len(seqs) and seqs[i] <= floor:
                out.append(max(0.0, (t - published[seqs[i]]) * 1000))
                i += 1
        return out

    def backlog_max(self, since: float, until: float) -> int:
        """The most events waiting (unacknowledged or not yet delivered) in [since, until]."""
        return max((p for t, _, p in self.samples if since <= t <= until), default=0)

    def drained_at(self, last_seq: int, after: float) -> float | None:
        for t, floor, _ in self.samples:
            if t >= after and floor >= last_seq:
                return t
        return None


async def stream_times(bus: Bus, first: int, last: int) -> dict[int, float]:
    """Publication time (wall clock) of each ``CALL_EVENTS`` message ``first``..``last``."""
    out: dict[int, float] = {}
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        seq = int(msg.metadata.sequence.stream)
        out[seq] = msg.metadata.timestamp.timestamp()
        if seq >= last:
            done.set()

    sub = await bus.js.subscribe(
        subjects.ALL_CALL_EVENTS,
        stream=subjects.CALL_EVENTS_STREAM,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first),
        cb=on_msg,
    )
    try:
        await asyncio.wait_for(done.wait(), 120)
    finally:
        await sub.unsubscribe()
    return out


class ChurnProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, nats_url: str, index: int, calls: int) -> "ChurnProcess":
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--churn",
            nats_url,
            str(index),
            str(calls),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": ROOT, "LOG_LEVEL": "warning"},
        )
        return cls(proc)

    async def read(self, timeout: float = 300) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("a churn process died")
        out: dict[str, Any] = json.loads(line)
        return out

    async def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def last_seq(bus: Bus) -> int:
    info = await bus.js.stream_info(subjects.CALL_EVENTS_STREAM)
    return int(info.state.last_seq)


async def part_lag(args: argparse.Namespace, server: NatsServer, bus: Bus) -> dict[str, Any]:
    workers = [
        await ChurnProcess.start(server.url, i, args.lag_calls // args.churners)
        for i in range(args.churners)
    ]
    meters = {
        "selector": ConsumerLag(bus, "mode-selector"),
        "archive": ConsumerLag(bus, "archive-events"),
    }
    bursts: list[dict[str, Any]] = []
    try:
        for w in workers:
            await w.read()
        # Let the selector and the archive take in the calls' creation first.
        await asyncio.sleep(3)
        for m in meters.values():
            m.start()
        windows: list[tuple[float, float, int, int]] = []
        for rate in args.rates:
            first = await last_seq(bus) + 1
            t0 = time.time()
            for w in workers:
                await w.send(cmd="burst", rate=rate / len(workers), seconds=args.burst_s)
            results = [await w.read() for w in workers]
            t1 = time.time()
            last = await last_seq(bus)
            windows.append((t0, t1, first, last))
            # The backlog drains before the next burst (bounded).
            deadline = time.monotonic() + args.drain_s
            while time.monotonic() < deadline:
                if all(m.samples and m.samples[-1][1] >= last for m in meters.values()):
                    break
                await asyncio.sleep(0.1)
            ops = sum(r["ops"] for r in results)
            errors = summed([r["errors"] for r in results])
            bursts.append({"rate": rate, "ops": ops, "events": last - first + 1, "errors": errors})
        await asyncio.sleep(0.5)
        for m in meters.values():
            await m.stop()
        published = await stream_times(bus, windows[0][2], windows[-1][3])
        for b, (t0, t1, _, last) in zip(bursts, windows, strict=True):
            b["events_per_s"] = round(b["events"] / (t1 - t0), 1)
            mid = (t0 + t1) / 2
            for name, m in meters.items():
                lag = m.lags(published, t0, t1 + 1e-3)
                early = m.lags(published, t0, mid)
                late = m.lags(published, mid, t1 + 1e-3)
                drained = m.drained_at(last, t1)
                b[name] = {
                    "lag_p50_ms": round(pct(lag, 0.5), 1),
                    "lag_p99_ms": round(pct(lag, 0.99), 1),
                    "lag_max_ms": round(max(lag), 1) if lag else None,
                    "lag_p99_first_half_ms": round(pct(early, 0.5 + 0.49), 1),
                    "lag_p99_second_half_ms": round(pct(late, 0.99), 1),
                    "drained_s_after_burst": round(drained - t1, 2) if drained else None,
                    "backlog_max": m.backlog_max(t0, drained or t1 + args.drain_s),
                    "events_measured": len(lag),
                }
            print(
                f"  burst {b['rate']}/s for {args.burst_s:.0f}s: {b['events']} events "
                f"({b['events_per_s']}/s), errors {b['errors'] or 'none'}"
            )
            for name in meters:
                x = b[name]
                print(
                    f"    {name:<8} lag p50 {x['lag_p50_ms']} ms  p99 {x['lag_p99_ms']} ms  "
                    f"max {x['lag_max_ms']} ms  (p99 first half {x['lag_p99_first_half_ms']}, "
                    f"second half {x['lag_p99_second_half_ms']}); drained "
                    f"{x['drained_s_after_burst']}s after the burst, backlog max {x['backlog_max']}"
                )
    finally:
        for m in meters.values():
            await m.stop()
        await asyncio.gather(*(w.stop() for w in workers))
    return {"bursts": bursts}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = NatsServer().start()
    mongo = MongoServer().start()
    stack = CallStack(
        server.url,
        gateways=2,
        selectors=1,
        media_nodes=1,
        env=BENCH_ENV,
        selector_env={"SELECTOR_MIGRATION_DEADLINE_S": "10"},
        media_env={"MEDIA_NODE_MAX_PARTICIPANTS": "200"},
    )
    result: dict[str, Any] = {}
    archive: subprocess.Popen[bytes] | None = None
    try:
        stack.start_all()
        archive = start_archive(server.url, mongo.url, stack.log_dir)
        bus = await Bus.connect(BusSettings(nats_url=server.url), "bench-load")
        await wait_consumer(bus, "archive-events")
        print(f"gateways {', '.join(stack.urls)} on {server.url}")
        if "1" in args.parts:
            print(f"part 1: {args.sockets} idle sockets on one gateway")
            result.update(await part_sockets(args, server, stack, bus))
        if "2" in args.parts:
            print(f"part 2: a {args.participants}-person GROUP call under churn")
            try:
                result.update(await part_call(args, stack, bus))
            except (AssertionError, TimeoutError) as exc:  # reported; part 3 still runs
                print(f"  part 2 FAILED: {exc!r}")
                result["call_state_ok"] = False
                result["call_error"] = repr(exc)[:300]
        if "3" in args.parts:
            print(f"part 3: selector and archive lag, bursts of {args.rates} events/s")
            lag = await part_lag(args, server, bus)
            result["lag_bursts"] = lag["bursts"]
            worst = lag["bursts"][-1] if lag["bursts"] else {}
            for name in ("selector", "archive"):
                values = [b[name]["lag_p99_ms"] for b in lag["bursts"]]
                result[f"{name}_lag_p99_ms"] = max(values) if values else None
            result["lag_events_per_s_max"] = worst.get("events_per_s")
        await bus.close()
        crashed = stack.tracebacks()
        if crashed:
            result["tracebacks_in"] = crashed
    finally:
        if archive is not None:
            archive.terminate()
            try:
                archive.wait(15)
            except subprocess.TimeoutExpired:
                archive.kill()
                archive.wait()
        stack.stop()
        mongo.cleanup()
        server.cleanup()
    if "relay_p99_ms_loaded" in result:
        result["relay_goal_met"] = result["relay_p99_ms_loaded"] < 10.0
    return result


def start_archive(nats_url: str, mongo_url: str, log_dir: Path) -> "subprocess.Popen[bytes]":
    log = (log_dir / "archive.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.archive"],
        env={
            **os.environ,
            "NATS_URL": nats_url,
            "MONGO_URL": mongo_url,
            "SERVICE_ID": "archive-bench",
            "LOG_LEVEL": "warning",
        },
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def wait_consumer(bus: Bus, durable: str, timeout: float = 60) -> None:
    async def exists() -> bool:
        try:
            await bus.js.consumer_info(subjects.CALL_EVENTS_STREAM, durable)
            return True
        except Exception:
            return False

    await eventually(exists, timeout=timeout, step=0.2)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--hold":
        import uvloop

        uvloop.run(hold_main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--churn":
        asyncio.run(churn_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small version of every part")
    parser.add_argument("--parts", default="123", help="1: sockets; 2: the 50-call; 3: lag")
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--holders", type=int, default=4, help="socket-holding processes")
    parser.add_argument("--window", type=float, default=30.0, help="idle CPU window (s)")
    parser.add_argument("--samples", type=int, default=1000, help="relay samples")
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--burst", type=int, default=10, help="joins at once while filling")
    parser.add_argument("--churn", type=int, default=15, help="leaving (and joining) per round")
    parser.add_argument("--rounds", type=int, default=8, help="churn rounds")
    parser.add_argument("--lag-calls", type=int, default=400, help="calls the churn runs on")
    parser.add_argument("--churners", type=int, default=2, help="churn processes")
    parser.add_argument(
        "--rates", type=lambda v: [int(x) for x in v.split(",")], default=[500, 1000, 2000]
    )
    parser.add_argument("--burst-s", type=float, default=6.0)
    parser.add_argument("--drain-s", type=float, default=60.0)
    args = parser.parse_args()
    if args.quick:
        args.sockets, args.holders, args.window, args.samples = 1000, 2, 27.0, 300
        args.participants, args.churn, args.rounds = 12, 4, 3
        args.lag_calls, args.rates, args.burst_s = 100, [200, 400], 3.0
    t0 = time.monotonic()
    result = asyncio.run(run(args))
    result["bench_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
