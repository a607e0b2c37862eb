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
3. **Speaker switch** in that call: a participant nobody shows (its video paused) starts
   speaking; three probe receivers decode every keyframe in their video slots (switched-to
   participants' clips are tinted blue, the others' are not, so a probe knows whose picture
   it decoded). Switch time: from the moment the speaker's worker turned its microphone on
   to the first tinted keyframe decoded in the slot the slot map gives it; p50/p95 over
   several switches.

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
SCRIPT = Path(__file__).resolve()
PINNED_FRAME_PATH = "0c6b0df93f10f8416e1c8e4fe96ae230b0c62328"
CACHE = ROOT / "bench" / "results" / "cache"
#: The clip of the participants switched to (p40 on): blue, so a probe knows whose picture
#: it decoded.
TINT = (-60, -40, 90)
#: The video of the 50-person call: a grid tile (no simulcast in aiortc, so the node's REMB,
#: ``MEDIA_NODE_UPLINK_VIDEO_BPS``, is what keeps a large call's publishers at tile size).
CALL_CLIPS = {"tile": ((320, 240), 300_000), "hd": ((640, 480), 1_200_000)}


def call_clip(args: argparse.Namespace, tint: tuple[int, int, int] = (0, 0, 0)) -> Clip:
    size, bitrate = CALL_CLIPS[args.call_video]
    return Clip.make(CACHE, tint=tint, size=size, bitrate=bitrate)


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


def node_log() -> Any:
    """Where a node's log goes: ``BENCH_NODE_LOG`` (a file, appended) or nowhere."""
    path = os.environ.get("BENCH_NODE_LOG")
    return open(path, "ab") if path else asyncio.subprocess.DEVNULL


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
            "LOG_LEVEL": os.environ.get("BENCH_NODE_LOG_LEVEL", "warning"),
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
            stderr=node_log(),
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
    bus: Bus, node: Node, *, call: str, pid: str, video: int, audio: int, rx: CountingReceiver
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
    bus: Bus, node: Node, *, call: str, pid: str, publisher: str, rx: CountingReceiver
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
    bus: Bus, node: Node, kind: str, *, clip: Clip, args: argparse.Namespace, legacy: bool
) -> dict[str, float]:
    """Marginal CPU of one forwarded stream of ``kind`` on ``node`` (one round)."""
    n = args.n
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
                sids.append(
                    await receive_legacy(bus, node, call=call, pid=f"r{i}", publisher="pub", rx=rx)
                )
            else:
                video, audio = (1, 0) if kind == "video" else (0, 1)
                opened = await receive_slots(
                    bus, node, call=call, pid=f"r{i}", video=video, audio=audio, rx=rx
                )
                sids.append(opened[0])
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
                        row[name] = await stream_cost(
                            bus, node, kind, clip=clip, args=args, legacy=legacy
                        )
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


class CallWorker:
    """Some of the 50 participants, in their own process (``--worker``): 2 cores cannot run
    all their receivers in one Python process next to the node without starving them.

    Driven over stdin/stdout, one JSON object per line: ``send`` (start sending: audio,
    video while forwarded; ``speakers`` speak), ``speak`` (``pid``, ``on``), ``mark`` /
    ``fps`` (frames per video slot showing someone, between the two), ``watch`` (probes
    decode ``pid``'s first keyframe in their slots; times from ``t0``, the orchestrator's
    ``time.monotonic()``, the same clock in every process), ``close``.
    """

    def __init__(
        self, bus: Bus, node_id: str, call: str, pids: list[str], clips: tuple[Clip, Clip]
    ):
        self.bus = bus
        self.node_id = node_id
        self.call = call
        self.pids = pids
        self.clips = clips
        self.pubs: dict[str, RawPublisher] = {}
        self.rxs: dict[str, CountingReceiver] = {}
        self.sids: dict[str, str] = {}
        self.offers: dict[str, DownlinkOffer] = {}
        self.slots: dict[str, dict[int, Any]] = {}
        self.probes: list[str] = []
        #: Slot SSRC -> (decoded at, tinted?) of each keyframe the probes decoded.
        self.keyframes: dict[int, list[tuple[float, bool]]] = {}
        self._marks: dict[str, dict[int, int]] = {}
        self._marked_at = 0.0

    async def on_event(self, event: AnyMediaEvent, _: Incoming) -> None:
        pid = event.participant_id
        if isinstance(event, VideoDemandChanged) and pid in self.pubs:
            self.pubs[pid].paused = not event.forwarded
        elif isinstance(event, SlotsChanged) and pid in self.rxs:
            self.slots[pid] = {s.index: s for s in event.slots}

    async def join(self) -> None:
        await self.bus.subscribe(subjects.media_events_of(self.call), AnyMediaEvent, self.on_event)
        await self.bus.flush()
        for start in range(0, len(self.pids), 5):
            await asyncio.gather(*(self._join(pid) for pid in self.pids[start : start + 5]))

    async def _join(self, pid: str) -> None:
        clip = self.clips[1] if int(pid[1:]) >= 40 else self.clips[0]
        pub = self.pubs[pid] = RawPublisher(clip)
        pub.paused = True  # pre-warmed: connected, nothing sent
        opened = await rpc(
            self.bus,
            self.node_id,
            OpenSession(call_id=self.call, participant_id=pid, lease_s=600),
            SessionOpened,
        )
        sid = self.sids[pid] = opened.session_id
        answer = await rpc(
            self.bus, self.node_id, Publish(session_id=sid, sdp=await pub.offer()), SdpAnswer
        )
        await pub.answer(answer.sdp)
        rx = self.rxs[pid] = CountingReceiver()
        offer = await rpc(self.bus, self.node_id, OpenDownlink(session_id=sid), DownlinkOffer)
        self.offers[pid] = offer
        sdp = await rx.answer(offer.sdp)
        await rpc(self.bus, self.node_id, AnswerDownlink(session_id=sid, sdp=sdp), MediaAck)

    def send(self, speakers: list[str]) -> None:
        for pid, pub in self.pubs.items():
            pub.paused = False
            pub.speaking = pid in speakers

    def mark(self) -> None:
        self._marked_at = time.monotonic()
        self._marks = {
            pid: {ssrc: c.frames for ssrc, c in rx.counts.items()} for pid, rx in self.rxs.items()
        }

    def fps(self) -> list[float]:
        elapsed = time.monotonic() - self._marked_at
        out: list[float] = []
        for pid, rx in self.rxs.items():
            for slot in self.offers[pid].slots:
                shown = self.slots.get(pid, {}).get(slot.index)
                if slot.kind != "video" or shown is None or shown.showing_id is None:
                    continue
                count = rx.counts.get(slot.ssrc)
                frames = (count.frames if count else 0) - self._marks.get(pid, {}).get(slot.ssrc, 0)
                out.append(frames / elapsed)
        return out

    def probe(self, probes: list[str]) -> None:
        """Probes decode every keyframe of every video slot, remembering when and whether
        it was a tinted (switched-to) participant's picture."""
        for pid in probes:
            if pid not in self.rxs:
                continue
            for slot in self.offers[pid].slots:
                if slot.kind != "video":
                    continue
                seen = self.keyframes.setdefault(slot.ssrc, [])

                def decoded(at: float, image: Any, seen: list[tuple[float, bool]] = seen) -> None:
                    blue = float(image[..., 2].mean()) - float(image[..., 0].mean())
                    seen.append((at, blue > 30))

                self.rxs[pid].watch(slot.ssrc, decoded)
            self.probes.append(pid)

    def switched(self, target: str, t0: float) -> list[float]:
        """Per probe: from ``t0`` to the first tinted keyframe decoded in the slot that
        now shows ``target`` (once the slot map says which slot that is)."""
        out: list[float] = []
        for pid in self.probes:
            slot = next(
                (
                    s
                    for s in self.slots.get(pid, {}).values()
                    if s.kind == "video" and s.showing_id == target
                ),
                None,
            )
            if slot is None:
                continue
            tinted = [at for at, blue in self.keyframes.get(slot.ssrc, []) if blue and at > t0]
            if tinted:
                out.append(tinted[0] - t0)
        return out

    async def close(self) -> None:
        await close_sessions_of(self.bus, self.node_id, list(self.sids.values()))
        await close_all(*self.pubs.values(), *self.rxs.values())


async def close_sessions_of(bus: Bus, node_id: str, sids: list[str]) -> None:
    await asyncio.gather(
        *(rpc(bus, node_id, CloseSession(session_id=s), MediaAck) for s in sids),
        return_exceptions=True,
    )


async def worker_main(args: argparse.Namespace) -> None:
    clips = (call_clip(args), call_clip(args, tint=TINT))
    settings = BusSettings(nats_url=args.nats, nats_connect_deadline_s=5)
    bus = await Bus.connect(settings, f"bench-worker-{args.index}")
    pids = [f"p{i:02d}" for i in range(args.index, args.participants, args.workers)]
    worker = CallWorker(bus, args.node, args.call, pids, clips)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    await worker.join()
    reply({"joined": len(pids)})
    while line := await reader.readline():
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "send":
            worker.send(cmd["speakers"])
        elif name == "speak":
            if cmd["pid"] in worker.pubs:
                worker.pubs[cmd["pid"]].speaking = cmd["on"]
                reply({"ok": name, "at": time.monotonic()})  # when it started speaking
                continue
        elif name == "mark":
            worker.mark()
        elif name == "fps":
            reply({"fps": worker.fps()})
            continue
        elif name == "probe":
            worker.probe(cmd["probes"])
        elif name == "switched":
            reply({"switched": worker.switched(cmd["pid"], cmd["t0"])})
            continue
        elif name == "close":
            await worker.close()
            reply({"closed": True})
            break
        reply({"ok": name})
    await bus.close()


class WorkerProcess:
    """The orchestrator's handle on one :class:`CallWorker` process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, args: argparse.Namespace, nats_url: str, node_id: str, call: str, index: int
    ) -> "WorkerProcess":
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--worker",
            "--nats",
            nats_url,
            "--node",
            node_id,
            "--call",
            call,
            "--index",
            str(index),
            "--workers",
            str(args.workers),
            "--participants",
            str(args.participants),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**24,
        )
        return cls(proc)

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        if not line:
            raise RuntimeError("a load-generator worker died")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ask(cmd="close"), 60)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()


async def part2and3(bus: Bus, server: NatsServer, args: argparse.Namespace) -> dict[str, Any]:
    node = await Node.start(bus, server.url, "bench-call", None)
    beats: list[MediaNodeHeartbeat] = []

    async def on_beat(beat: MediaNodeHeartbeat, _: Incoming) -> None:
        if beat.node_id == node.node_id:
            beats.append(beat)

    await bus.subscribe(subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat, on_beat)
    call = f"call50-{time.monotonic_ns()}"
    out: dict[str, Any] = {}
    n = args.participants
    workers: list[WorkerProcess] = []
    try:
        empty_cpu = await node.cpu(args.window / 2)
        rss0, ports0 = node.rss(), node.udp_ports()
        workers = [
            await WorkerProcess.start(args, server.url, node.node_id, call, i)
            for i in range(args.workers)
        ]
        for worker in workers:
            await worker.read()  # joined
        await asyncio.sleep(args.warmup)
        idle_cpu = await node.cpu(args.window)
        out["prewarm"] = {
            "sessions": n,
            "cpu_core_total": round(idle_cpu, 4),
            "cpu_core_per_session": round((idle_cpu - empty_cpu) / n, 5),
            "rss_mb_per_session": round((node.rss() - rss0) / n / 2**20, 2),
            "udp_ports_per_session": round((node.udp_ports() - ports0) / n, 2),
        }
        print(f"  pre-warmed: {json.dumps(out['prewarm'])}")

        speakers = ["p00", "p01"]
        for worker in workers:
            await worker.ask(cmd="send", speakers=speakers)
        await asyncio.sleep(args.warmup + 3)  # pauses settle (2 s hold-down)
        for worker in workers:
            await worker.ask(cmd="mark")
        cpu = await node.cpu(args.window * 1.5)
        fps = [f for worker in workers for f in (await worker.ask(cmd="fps"))["fps"]]
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
            "video_slots_measured": len(fps),
            "participants_per_node": int(n * 1.6 / cpu) if cpu > 0 else 0,
        }
        print(f"  {n}-person call: {json.dumps(out['call'])}")

        probes = ["p02", "p03", "p04"]
        for worker in workers:
            await worker.ask(cmd="probe", probes=probes)
        samples: list[float] = []
        previous = speakers
        for target in [f"p{i:02d}" for i in range(40, min(n, 40 + args.switches))]:
            for pid in previous:
                for worker in workers:
                    await worker.ask(cmd="speak", pid=pid, on=False)
            await asyncio.sleep(1.5)  # the previous speakers go quiet
            host = workers[int(target[1:]) % len(workers)]
            # Measured from when the target's own worker switched its microphone on.
            t0 = float((await host.ask(cmd="speak", pid=target, on=True))["at"])
            got: list[float] = []
            for _ in range(50):  # up to 5 s
                await asyncio.sleep(0.1)
                got = [
                    s
                    for w in workers
                    for s in (await w.ask(cmd="switched", pid=target, t0=t0))["switched"]
                ]
                if len(got) >= len(probes):
                    break
            samples += got
            previous = [target]
            print(
                f"  switch to {target}: decoded at {len(got)} probes, "
                + ", ".join(f"{g * 1000:.0f} ms" for g in got)
            )
        ordered = sorted(samples)
        out["switch"] = {
            "samples": len(samples),
            "expected": len(probes) * args.switches,
            "p50_s": round(statistics.median(ordered), 3) if ordered else None,
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3)
            if ordered
            else None,
        }
        print(f"  speaker switch: {json.dumps(out['switch'])}")
    finally:
        await asyncio.gather(*(w.stop() for w in workers))
        await node.stop()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    clip = Clip.make(CACHE)
    call_clip(args)  # encoded once here, read by the workers
    tile = call_clip(args, tint=TINT)
    tile_rate = sum(map(len, tile.deltas)) * 8 * 30 / len(tile.deltas) / 1e6
    print(
        f"clips ready in {time.monotonic() - t0:.1f}s ({len(clip.deltas)} frames, "
        f"{sum(map(len, clip.deltas)) * 8 * 30 / len(clip.deltas) / 1e6:.2f} Mbit/s)"
    )
    server = NatsServer().start()
    try:
        settings = BusSettings(nats_url=server.url, nats_connect_deadline_s=5)
        bus = await Bus.connect(settings, "bench-sfu-scale")
        await provision(bus.js, settings)
        p1: dict[str, Any] = {"video": {}, "audio": {}, "frame_path_commit": None}
        if "1" in args.parts:
            print("part 1: cost per forwarded stream (packet path vs frame path)")
            p1 = await part1(bus, server, args, clip)
        p23: dict[str, Any] = {"call": {}, "switch": {}, "prewarm": {}}
        if "2" in args.parts:
            print("parts 2 and 3: a 50-person call, speaker switches")
            p23 = await part2and3(bus, server, args)
        await bus.close()
    finally:
        server.cleanup()
    video, audio = p1["video"], p1["audio"]

    def r(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    return {
        "core_per_video_stream": r(video.get("packet_per_stream"), 5),
        "packet_over_frame_cost_ratio": r(video.get("ratio_median"), 3),
        "packet_over_frame_cost_ratio_range": [
            r(video.get("ratio_min"), 3),
            r(video.get("ratio_max"), 3),
        ],
        "frame_path_core_per_video_stream": r(video.get("frame_per_stream"), 5),
        "video_packets_per_s": r(video.get("packets_per_s"), 1),
        "core_per_audio_stream": r(audio.get("packet_per_stream"), 5),
        "audio_packet_over_frame_cost_ratio": r(audio.get("ratio_median"), 3),
        "participants_per_node": p23["call"].get("participants_per_node"),
        "call_participants": p23["call"].get("participants"),
        "call_node_cpu_core": p23["call"].get("node_cpu_core"),
        "call_delivered_fps_median": p23["call"].get("delivered_fps_median"),
        "call_delivered_fps_p5": p23["call"].get("delivered_fps_p5"),
        "speaker_switch_p50_s": p23["switch"].get("p50_s"),
        "speaker_switch_p95_s": p23["switch"].get("p95_s"),
        "speaker_switch_samples": p23["switch"].get("samples"),
        "prewarm_core_per_session": p23["prewarm"].get("cpu_core_per_session"),
        "prewarm_rss_mb_per_session": p23["prewarm"].get("rss_mb_per_session"),
        "prewarm_udp_ports_per_session": p23["prewarm"].get("udp_ports_per_session"),
        "frame_path_commit": p1["frame_path_commit"],
        "rounds": args.rounds,
        "receivers_per_round": args.n,
        "load_generator_processes": args.workers,
        "call_video": f"{args.call_video} {CALL_CLIPS[args.call_video][0]} {tile_rate:.2f} Mbit/s",
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
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--parts", default="12", help="1: per-stream cost; 2: the call and switch")
    parser.add_argument(
        "--call-video", choices=sorted(CALL_CLIPS), default="tile", help="the 50-call's video"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nats", help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--call", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import uvloop

        uvloop.run(worker_main(args))
        return
    if args.quick:
        args.rounds, args.window, args.warmup, args.switches = 2, 5.0, 2.0, 4
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
