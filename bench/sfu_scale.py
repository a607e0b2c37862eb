"""The SFU at the design's scale: cost per forwarded stream, a 50-person call, speaker switch.

Same run, same machine, real node processes, load from :mod:`bench.sfu` (pre-encoded
640x480 VP8 at 30 fps and Opus, real ICE/DTLS/SRTP, receivers that count without
decrypting). CPU is psutil user+system time of the node's pid over each window.

1. **Per forwarded stream, packet path vs frame path.** The frame path is today's `main`:
   its media node (one peer connection per subscription, frames reassembled and
   re-packetised by ``RTCRtpSender``) is taken from git (``git archive`` of the merge base
   with ``main``) into a temporary directory and run as a subprocess, and driven through its
   own verbs. Both nodes run for the whole part; rounds alternate which goes first. In each
   round and for each path: one video-only publisher, the node's CPU with 0 and with N
   receivers; marginal cost = (cpu(N) - cpu(0)) / N. The ratio is taken per round; the
   median of the paired ratios and their spread are reported. Then the same for audio (a
   publisher speaking all the time, 50 packets/s).
2. **A 50-person call** on the packet path: 50 sessions with 9 video + 3 audio slots. First
   all pre-warmed (both legs connected, nothing sent): the idle cost per session (CPU,
   memory, UDP ports). Then everyone sends audio (two speakers, the rest DTX) and video
   while forwarded (the node tells the others to pause): node CPU, delivered fps per video
   slot, and participants per 2-core node at 80 % CPU (a linear projection of this call).
3. **Speaker switch** in that call: a participant nobody shows starts speaking; three probe
   receivers decode the first keyframe of it in their slots (its clip is tinted blue, the
   others' are not, so the probe knows whose picture it decoded). p50/p95 of "first words"
   to "decoded in a slot", over several switches.

Last line: one JSON object with ``core_per_video_stream``, ``packet_over_frame_cost_ratio``,
``core_per_audio_stream``, ``participants_per_node``, ``speaker_switch_p95_s`` and more.
"""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sfu import (
    Clip,
    CountingReceiver,
    LegacyAnswer,
    LegacyOffer,
    LegacySubscribe,
    RawPublisher,
    close_all,
    rpc,
)
from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.media import (
    AnswerDownlink,
    CloseSession,
    DownlinkOffer,
    MediaAck,
    MediaNodeHeartbeat,
    OpenDownlink,
    OpenSession,
    Publish,
    SdpAnswer,
    SessionOpened,
)
from schemas.media_events import AnyMediaEvent, SlotsChanged, VideoDemandChanged
from schemas.provisioning import provision
from schemas.settings import BusSettings
from tests.support.nats_server import NatsServer
from tests.support.processes import HeartbeatWatch

ROOT = Path(__file__).resolve().parents[1]
PINNED_FRAME_PATH = "0c6b0df93f10f8416e1c8e4fe96ae230b0c62328"
CACHE = ROOT / "bench" / "results" / "cache"


def frame_path_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return PINNED_FRAME_PATH


def extract_frame_path(commit: str, into: Path) -> Path:
    archive = into / "frame.tar"
    with archive.open("wb") as out:
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "media_node", "schemas"],
            check=True,
            stdout=out,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into / "frame", filter="data")
    return into / "frame"


class Node:
    """A node process (either path) and its CPU meter."""

    def __init__(self, proc: asyncio.subprocess.Process, node_id: str) -> None:
        self.proc = proc
        self.node_id = node_id
        self.ps = psutil.Process(proc.pid)

    @classmethod
    async def start(cls, bus: Bus, nats_url: str, node_id: str, code: Path | None) -> "Node":
        env = {
            **os.environ,
            "NATS_URL": nats_url,
            "SERVICE_ID": node_id,
            "LOG_LEVEL": "warning",
            "MEDIA_NODE_REPORT_INTERVAL_S": "1",
            "MEDIA_NODE_MAX_PARTICIPANTS": "200",
            "PYTHONPATH": str(code or ROOT),
        }
        watch = await HeartbeatWatch.start(bus, "media_node", node_id)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "media_node",
            cwd=str(code or ROOT),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await watch.wait_state("ready", timeout=60)
        return cls(proc, node_id)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    async def cpu(self, window: float) -> float:
        """CPU-seconds per second (1.0 = one core) over ``window``."""
        before, started = self.cpu_s(), time.monotonic()
        await asyncio.sleep(window)
        return (self.cpu_s() - before) / (time.monotonic() - started)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def udp_ports(self) -> int:
        return len(self.ps.net_connections(kind="udp"))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 30)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def publish(bus: Bus, node: Node, call: str, pid: str, pub: RawPublisher) -> str:
    opened = await rpc(
        bus, node.node_id, OpenSession(call_id=call, participant_id=pid), SessionOpened
    )
    answer = await rpc(
        bus, node.node_id, Publish(session_id=opened.session_id, sdp=await pub.offer()), SdpAnswer
    )
    await pub.answer(answer.sdp)
    await asyncio.wait_for(pub.connected.wait(), 30)
    return str(opened.session_id)


async def receive_slots(
    bus: Bus, node: Node, call: str, pid: str, video: int, audio: int, rx: CountingReceiver
) -> tuple[str, DownlinkOffer]:
    opened = await rpc(
        bus,
        node.node_id,
        OpenSession(call_id=call, participant_id=pid, video_slots=video, audio_slots=audio),
        SessionOpened,
    )
    offer = await rpc(bus, node.node_id, OpenDownlink(session_id=opened.session_id), DownlinkOffer)
    answer = await rx.answer(offer.sdp)
    await rpc(bus, node.node_id, AnswerDownlink(session_id=opened.session_id, sdp=answer), MediaAck)
    return str(opened.session_id), offer


async def receive_legacy(
    bus: Bus, node: Node, call: str, pid: str, publisher: str, rx: CountingReceiver
) -> str:
    opened = await rpc(
        bus, node.node_id, OpenSession(call_id=call, participant_id=pid), SessionOpened
    )
    offer = await rpc(
        bus,
        node.node_id,
        LegacySubscribe(session_id=opened.session_id, publisher_id=publisher),
        LegacyOffer,
    )
    answer = await rx.answer(offer.sdp)
    await rpc(
        bus,
        node.node_id,
        LegacyAnswer(
            session_id=opened.session_id, subscription_id=offer.subscription_id, sdp=answer
        ),
        MediaAck,
    )
    return str(opened.session_id)


async def close_sessions(bus: Bus, node: Node, sids: list[str]) -> None:
    await asyncio.gather(
        *(rpc(bus, node.node_id, CloseSession(session_id=s), MediaAck) for s in sids),
        return_exceptions=True,
    )


def packets(rxs: list[CountingReceiver]) -> int:
    return sum(c.packets for rx in rxs for c in rx.counts.values())


async def stream_cost(
    bus: Bus, node: Node, kind: str, n: int, clip: Clip, args: argparse.Namespace, legacy: bool
) -> dict[str, float]:
    """Marginal CPU of one forwarded stream of ``kind`` on ``node`` (one round)."""
    call = f"cost-{kind}-{time.monotonic_ns()}"
    # Both m-lines (the frame path's node refuses an offer without one of them); only
    # the measured kind sends.
    pub = RawPublisher(clip, speaking=kind == "audio")
    pub.paused = kind != "video"
    sids = [await publish(bus, node, call, "pub", pub)]
    rxs = [CountingReceiver() for _ in range(n)]
    try:
        await asyncio.sleep(args.warmup)
        idle = await node.cpu(args.window)
        for i, rx in enumerate(rxs):
            if legacy:
                sids.append(await receive_legacy(bus, node, call, f"r{i}", "pub", rx))
            else:
                video, audio = (1, 0) if kind == "video" else (0, 1)
                sids.append((await receive_slots(bus, node, call, f"r{i}", video, audio, rx))[0])
        await asyncio.sleep(args.warmup)
        before, started = packets(rxs), time.monotonic()
        loaded = await node.cpu(args.window)
        rate = (packets(rxs) - before) / (time.monotonic() - started) / n
        return {"idle": idle, "loaded": loaded, "per_stream": (loaded - idle) / n, "pps": rate}
    finally:
        await close_sessions(bus, node, sids)
        await close_all(pub, *rxs)


async def part1(
    bus: Bus, server: NatsServer, args: argparse.Namespace, clip: Clip
) -> dict[str, Any]:
    commit = frame_path_commit()
    with tempfile.TemporaryDirectory() as tmp:
        code = extract_frame_path(commit, Path(tmp))
        packet = await Node.start(bus, server.url, "bench-packet", None)
        frame = await Node.start(bus, server.url, "bench-frame", code)
        results: dict[str, Any] = {"frame_path_commit": commit[:12]}
        try:
            for kind in ("video", "audio"):
                ratios: list[float] = []
                rounds: list[dict[str, Any]] = []
                for r in range(args.rounds):
                    order = [("frame", frame, True), ("packet", packet, False)]
                    if r % 2:
                        order.reverse()
                    row: dict[str, Any] = {}
                    for name, node, legacy in order:
                        row[name] = await stream_cost(bus, node, kind, args.n, clip, args, legacy)
                    ratios.append(row["packet"]["per_stream"] / row["frame"]["per_stream"])
                    rounds.append(row)
                    print(
                        f"  {kind} round {r + 1}: per stream packet "
                        f"{row['packet']['per_stream']:.4f} core ({row['packet']['pps']:.0f} pkt/s)"
                        f", frame {row['frame']['per_stream']:.4f} core "
                        f"({row['frame']['pps']:.0f} pkt/s), ratio {ratios[-1]:.2f}"
                    )
                results[kind] = {
                    "packet_per_stream": statistics.median(
                        x["packet"]["per_stream"] for x in rounds
                    ),
                    "frame_per_stream": statistics.median(x["frame"]["per_stream"] for x in rounds),
                    "ratio_median": statistics.median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                    "packets_per_s": statistics.median(x["packet"]["pps"] for x in rounds),
                    "rounds": rounds,
                }
        finally:
            await packet.stop()
            await frame.stop()
    return results


class CallHarness:
    """The 50-person call of parts 2 and 3."""

    def __init__(self, bus: Bus, node: Node, clips: tuple[Clip, Clip], size: int) -> None:
        self.bus = bus
        self.node = node
        self.call = f"call50-{time.monotonic_ns()}"
        self.size = size
        self.pubs: dict[str, RawPublisher] = {}
        self.rxs: dict[str, CountingReceiver] = {}
        self.sids: dict[str, str] = {}
        self.slots: dict[str, dict[int, Any]] = {}  # participant -> slot index -> Slot
        self.offers: dict[str, DownlinkOffer] = {}
        self.clips = clips
        self.changed = asyncio.Event()

    def pid(self, i: int) -> str:
        return f"p{i:02d}"

    async def on_event(self, event: AnyMediaEvent, _: Incoming) -> None:
        pid = event.participant_id
        if isinstance(event, VideoDemandChanged) and pid in self.pubs:
            self.pubs[pid].paused = not event.forwarded
        elif isinstance(event, SlotsChanged):
            self.slots[pid] = {s.index: s for s in event.slots}
        self.changed.set()

    async def join_all(self, *, prewarm: bool) -> None:
        await self.bus.subscribe(subjects.media_events_of(self.call), AnyMediaEvent, self.on_event)
        await self.bus.nc.flush()
        for start in range(0, self.size, 10):
            await asyncio.gather(*(self._join(i, prewarm) for i in range(start, start + 10)))

    async def _join(self, i: int, prewarm: bool) -> None:
        pid = self.pid(i)
        clip = self.clips[1] if i >= 40 else self.clips[0]
        pub = self.pubs[pid] = RawPublisher(clip, speaking=False)
        pub.paused = prewarm
        if prewarm:
            pub.speaking = False
        node = self.node
        opened = await rpc(
            self.bus,
            node.node_id,
            OpenSession(call_id=self.call, participant_id=pid, lease_s=600),
            SessionOpened,
        )
        sid = self.sids[pid] = opened.session_id
        answer = await rpc(
            self.bus, node.node_id, Publish(session_id=sid, sdp=await pub.offer()), SdpAnswer
        )
        await pub.answer(answer.sdp)
        rx = self.rxs[pid] = CountingReceiver()
        offer = self.offers[pid] = await rpc(
            self.bus, node.node_id, OpenDownlink(session_id=sid), DownlinkOffer
        )
        sdp = await rx.answer(offer.sdp)
        await rpc(self.bus, node.node_id, AnswerDownlink(session_id=sid, sdp=sdp), MediaAck)

    def video_ssrcs(self, pid: str) -> dict[int, int]:
        return {s.index: s.ssrc for s in self.offers[pid].slots if s.kind == "video"}

    async def close(self) -> None:
        await close_sessions(self.bus, self.node, list(self.sids.values()))
        await close_all(*self.pubs.values(), *self.rxs.values())


async def part2and3(
    bus: Bus, server: NatsServer, args: argparse.Namespace, clips: tuple[Clip, Clip]
) -> dict[str, Any]:
    node = await Node.start(bus, server.url, "bench-call", None)
    beats: list[MediaNodeHeartbeat] = []

    async def on_beat(beat: MediaNodeHeartbeat, _: Incoming) -> None:
        if beat.node_id == node.node_id:
            beats.append(beat)

    await bus.subscribe(subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat, on_beat)
    call = CallHarness(bus, node, clips, args.participants)
    out: dict[str, Any] = {}
    try:
        empty_cpu = await node.cpu(args.window / 2)
        rss0, ports0 = node.rss(), node.udp_ports()
        await call.join_all(prewarm=True)
        await asyncio.sleep(args.warmup)
        idle_cpu = await node.cpu(args.window)
        n = args.participants
        out["prewarm"] = {
            "sessions": n,
            "cpu_core_total": round(idle_cpu, 4),
            "cpu_core_per_session": round((idle_cpu - empty_cpu) / n, 5),
            "rss_mb_per_session": round((node.rss() - rss0) / n / 2**20, 2),
            "udp_ports_per_session": round((node.udp_ports() - ports0) / n, 2),
        }
        print(f"  pre-warmed: {json.dumps(out['prewarm'])}")

        # Everyone sends: two speakers (p00, p01), the rest DTX; video while forwarded.
        for pid, pub in call.pubs.items():
            pub.paused = False
            pub.speaking = pid in ("p00", "p01")
        await asyncio.sleep(args.warmup + 3)  # pauses settle (2 s hold-down)
        counts_before = {
            p: {s: c.frames for s, c in rx.counts.items()} for p, rx in call.rxs.items()
        }
        started = time.monotonic()
        cpu = await node.cpu(args.window * 1.5)
        elapsed = time.monotonic() - started
        fps: list[float] = []
        for pid, rx in call.rxs.items():
            for index, ssrc in call.video_ssrcs(pid).items():
                slot = call.slots.get(pid, {}).get(index)
                if slot is None or slot.showing_id is None:
                    continue
                before = counts_before[pid].get(ssrc, 0)
                count = rx.counts.get(ssrc)
                fps.append(((count.frames if count else 0) - before) / elapsed)
        beat = beats[-1]
        out["call"] = {
            "participants": n,
            "node_cpu_core": round(cpu, 3),
            "video_slots_filled": beat.video_slots_filled,
            "forwarded_video_streams": beat.forwarded_video_streams,
            "forwarded_audio_streams": beat.forwarded_audio_streams,
            "video_publishers_forwarded": beat.video_publishers_forwarded,
            "delivered_fps_median": round(statistics.median(fps), 1) if fps else 0.0,
            "delivered_fps_p5": round(sorted(fps)[len(fps) // 20], 1) if fps else 0.0,
            "participants_per_node": int(n * 1.6 / cpu) if cpu > 0 else 0,
        }
        print(f"  50-person call: {json.dumps(out['call'])}")

        # Part 3: switches to participants nobody shows (tinted clip, p40+).
        probes = ["p02", "p03", "p04"]
        switch_s: list[float] = []
        wrong = 0
        prev = ["p00", "p01"]
        for target in [call.pid(i) for i in range(40, 40 + args.switches)]:
            for pid in prev:
                call.pubs[pid].speaking = False
            await asyncio.sleep(1.5)  # the previous speakers go quiet
            results: list[float] = []
            done = asyncio.Event()
            spoke_at = time.monotonic()

            def decoded(at: float, image: Any) -> None:
                nonlocal wrong
                blue = float(image[..., 2].mean()) - float(image[..., 0].mean())
                if blue < 30:
                    wrong += 1
                results.append(at - spoke_at)
                if len(results) == len(probes):
                    done.set()

            watching: set[str] = set()

            def arm() -> None:
                for probe in probes:
                    if probe in watching:
                        continue
                    for index, slot in call.slots.get(probe, {}).items():
                        if slot.publisher_id == target and slot.kind == "video":
                            call.rxs[probe].watch(slot.ssrc, decoded)
                            watching.add(probe)

            call.pubs[target].speaking = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    while not done.is_set():
                        arm()
                        call.changed.clear()
                        await asyncio.wait(
                            [
                                asyncio.ensure_future(call.changed.wait()),
                                asyncio.ensure_future(done.wait()),
                            ],
                            return_when=asyncio.FIRST_COMPLETED,
                        )
            switch_s += results
            prev = [target]
            print(
                f"  switch to {target}: decoded at {len(results)} probes, "
                + ", ".join(f"{r * 1000:.0f} ms" for r in results)
            )
        ordered = sorted(switch_s)
        out["switch"] = {
            "samples": len(switch_s),
            "expected": len(probes) * args.switches,
            "p50_s": round(statistics.median(ordered), 3) if ordered else None,
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3)
            if ordered
            else None,
            "wrong_picture": wrong,
        }
        print(f"  speaker switch: {json.dumps(out['switch'])}")
    finally:
        await call.close()
        await node.stop()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    clip = Clip.make(CACHE)
    tinted = Clip.make(CACHE, tint=(-60, -40, 90))
    print(
        f"clips ready in {time.monotonic() - t0:.1f}s ({len(clip.deltas)} frames, "
        f"{sum(map(len, clip.deltas)) * 8 * 30 / len(clip.deltas) / 1e6:.2f} Mbit/s)"
    )
    server = NatsServer().start()
    try:
        settings = BusSettings(nats_url=server.url, nats_connect_deadline_s=5)
        bus = await Bus.connect(settings, "bench-sfu-scale")
        await provision(bus.js, settings)
        print("part 1: cost per forwarded stream (packet path vs frame path)")
        p1 = await part1(bus, server, args, clip)
        print("parts 2 and 3: a 50-person call, speaker switches")
        p23 = await part2and3(bus, server, args, (clip, tinted))
        await bus.close()
    finally:
        server.cleanup()
    video, audio = p1["video"], p1["audio"]
    return {
        "core_per_video_stream": round(video["packet_per_stream"], 5),
        "packet_over_frame_cost_ratio": round(video["ratio_median"], 3),
        "packet_over_frame_cost_ratio_range": [
            round(video["ratio_min"], 3),
            round(video["ratio_max"], 3),
        ],
        "frame_path_core_per_video_stream": round(video["frame_per_stream"], 5),
        "video_packets_per_s": round(video["packets_per_s"], 1),
        "core_per_audio_stream": round(audio["packet_per_stream"], 5),
        "audio_packet_over_frame_cost_ratio": round(audio["ratio_median"], 3),
        "participants_per_node": p23["call"]["participants_per_node"],
        "call_50_node_cpu_core": p23["call"]["node_cpu_core"],
        "call_50_delivered_fps_median": p23["call"]["delivered_fps_median"],
        "call_50_delivered_fps_p5": p23["call"]["delivered_fps_p5"],
        "speaker_switch_p50_s": p23["switch"]["p50_s"],
        "speaker_switch_p95_s": p23["switch"]["p95_s"],
        "speaker_switch_samples": p23["switch"]["samples"],
        "speaker_switch_wrong_picture": p23["switch"]["wrong_picture"],
        "prewarm_core_per_session": p23["prewarm"]["cpu_core_per_session"],
        "prewarm_rss_mb_per_session": p23["prewarm"]["rss_mb_per_session"],
        "prewarm_udp_ports_per_session": p23["prewarm"]["udp_ports_per_session"],
        "frame_path_commit": p1["frame_path_commit"],
        "rounds": args.rounds,
        "receivers_per_round": args.n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter windows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=16, help="receivers per cost round")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--switches", type=int, default=8)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.window, args.warmup, args.switches = 2, 5.0, 2.0, 4
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
