"""A reusable aiortc test peer for the media node.

It publishes a synthetic video track whose colour identifies the publisher and whose top
rows carry a 16-bit frame counter (black/white blocks that survive VP8), plus a synthetic
audio track (speech-like bursts, or silence); and it subscribes to other participants,
decoding their frames (or, for load tests, only counting the encoded frames).
"""

import asyncio
import contextlib
import fractions
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack, VideoStreamTrack

from media_node import passthrough
from schemas import subjects
from schemas.bus import Bus
from schemas.media import (
    AnswerSubscription,
    CloseSession,
    MediaAck,
    MediaRequest,
    OpenSession,
    Publish,
    SdpAnswer,
    SessionOpened,
    Subscribe,
    SubscriptionOffer,
    Unsubscribe,
)
from tests.support.waiting import until

T = TypeVar("T")
Rgb = tuple[int, int, int]
BLOCK = 16
BITS = 16
AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms


def stamp_counter(image: npt.NDArray[np.uint8], value: int) -> None:
    """Write ``value`` as 16 black/white 16x16 blocks in the top rows (8 per row)."""
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        level = 255 if (value >> bit) & 1 else 0
        image[row * BLOCK : (row + 1) * BLOCK, col * BLOCK : (col + 1) * BLOCK] = level


def read_counter(image: npt.NDArray[np.uint8]) -> int:
    value = 0
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        centre = image[
            row * BLOCK + 4 : (row + 1) * BLOCK - 4, col * BLOCK + 4 : (col + 1) * BLOCK - 4
        ]
        if float(centre.mean()) > 128:
            value |= 1 << bit
    return value


def body_colour(image: npt.NDArray[np.uint8]) -> Rgb:
    """The mean colour below the counter rows."""
    body = image[2 * BLOCK + 8 :, :].reshape(-1, 3).mean(axis=0)
    return (int(body[0]), int(body[1]), int(body[2]))


def colour_close(a: Rgb, b: Rgb, tolerance: int = 40) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


class PatternVideoTrack(VideoStreamTrack):
    """Solid ``colour`` frames with a frame counter; remembers when each frame was made."""

    def __init__(
        self, colour: Rgb, width: int = 160, height: int = 120, *, textured: bool = False
    ) -> None:
        super().__init__()
        self.colour = colour
        base = np.zeros((height, width, 3), dtype=np.int16)
        base[:, :] = colour
        if textured:
            # Camera-like detail (noise that changes every frame) so the encoder spends a
            # realistic bitrate; the mean colour stays the publisher's colour.
            rng = np.random.default_rng(7)
            noise = rng.integers(-24, 25, size=(8, height, width, 3), dtype=np.int16)
            self._images = list(np.clip(base + noise, 0, 255).astype(np.uint8))
        else:
            self._images = [base.astype(np.uint8)]
        self.sent_at: dict[int, float] = {}
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = self._images[self.count % len(self._images)].copy()
        counter = self.count & 0xFFFF
        stamp_counter(image, counter)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        self.sent_at[counter] = time.monotonic()
        self.count += 1
        return frame


def speech_like(seconds: float, rate: int = AUDIO_RATE, f0: float = 130.0) -> npt.NDArray[np.int16]:
    """A voiced, formant-shaped, syllable-modulated signal that Silero takes for speech."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / rate
    signal = np.zeros_like(t)
    for k in range(1, 30):
        amp = sum(
            a * np.exp(-(((k * f0 - f) / 150) ** 2))
            for f, a in ((700, 1.0), (1200, 0.6), (2600, 0.3))
        )
        signal += (amp + 0.02) * np.sin(k * phase) / k**0.3
    signal *= np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 0.7
    signal += 0.01 * np.random.default_rng(1).standard_normal(len(t))
    out: npt.NDArray[np.int16] = (signal / np.abs(signal).max() * 0.5 * 32767).astype(np.int16)
    return out


class SyntheticAudioTrack(MediaStreamTrack):
    """20 ms mono frames at 48 kHz: speech-like bursts (1.2 s on, 0.8 s off) or silence."""

    kind = "audio"

    def __init__(self, speaking: bool) -> None:
        super().__init__()
        loop = np.zeros(2 * AUDIO_RATE, dtype=np.int16)
        if speaking:
            loop[: int(1.2 * AUDIO_RATE)] = speech_like(1.2)
        self._pcm = loop
        self._start: float | None = None
        self._timestamp = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            self._timestamp += AUDIO_SAMPLES
            await asyncio.sleep(self._start + self._timestamp / AUDIO_RATE - time.time())
        offset = self._timestamp % len(self._pcm)
        chunk = np.take(self._pcm, range(offset, offset + AUDIO_SAMPLES), mode="wrap")
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(chunk.astype(np.int16).tobytes())
        frame.pts = self._timestamp
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


@dataclass
class RemoteFeed:
    """What a subscriber receives from one publisher."""

    publisher_id: str
    subscription_id: str
    pc: RTCPeerConnection
    decode: bool
    subscribed_at: float = field(default_factory=time.monotonic)
    video_frames: int = 0
    audio_frames: int = 0
    keyframes: int = 0
    colours: list[Rgb] = field(default_factory=list)
    counters: list[tuple[int, float]] = field(default_factory=list)
    first_frame_at: float | None = None
    frame_times: list[float] = field(default_factory=list)
    dropped_packets: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def first_frame_s(self) -> float | None:
        return None if self.first_frame_at is None else self.first_frame_at - self.subscribed_at

    async def wait_until(self, predicate: Callable[["RemoteFeed"], bool], timeout: float) -> None:
        await until(lambda: predicate(self), self.changed, timeout)

    def _on_video(self, frame: Any) -> None:
        now = time.monotonic()
        if self.first_frame_at is None:
            self.first_frame_at = now
        self.video_frames += 1
        self.frame_times.append(now)
        if self.decode:
            image = frame.to_ndarray(format="rgb24")
            self.colours.append(body_colour(image))
            self.counters.append((read_counter(image), now))
        elif len(memoryview(frame)) > 0 and (memoryview(frame)[0] & 1) == 0:
            self.keyframes += 1
        self.changed.set()

    def _on_audio(self, _: Any) -> None:
        self.audio_frames += 1
        self.changed.set()


class MediaPeer:
    """One participant talking to a media node over NATS and WebRTC."""

    def __init__(
        self,
        bus: Bus,
        node_id: str,
        call_id: str,
        participant_id: str,
        *,
        colour: Rgb = (200, 40, 40),
        speaking: bool = True,
        transcription: bool = False,
        size: tuple[int, int] = (160, 120),
        textured: bool = False,
    ) -> None:
        self.bus = bus
        self.node_id = node_id
        self.call_id = call_id
        self.participant_id = participant_id
        self.colour = colour
        self.speaking = speaking
        self.transcription = transcription
        self.size = size
        self.textured = textured
        self.session_id = ""
        self.publish_pc: RTCPeerConnection | None = None
        self.video: PatternVideoTrack | None = None
        self.feeds: dict[str, RemoteFeed] = {}

    async def rpc(self, request: MediaRequest, reply_type: type[T], timeout: float = 15.0) -> T:
        subject = subjects.media_rpc(self.node_id, request.verb)
        return await self.bus.request(subject, request, reply_type, timeout=timeout)

    async def open(self) -> SessionOpened:
        opened = await self.rpc(
            OpenSession(
                call_id=self.call_id,
                participant_id=self.participant_id,
                transcription=self.transcription,
            ),
            SessionOpened,
        )
        self.session_id = opened.session_id
        return opened

    async def publish(self, *, audio: bool = True, video: bool = True) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.publish_pc = pc
        if audio:
            pc.addTrack(SyntheticAudioTrack(self.speaking))
        if video:
            self.video = PatternVideoTrack(self.colour, *self.size, textured=self.textured)
            pc.addTrack(self.video)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.rpc(
            Publish(session_id=self.session_id, sdp=pc.localDescription.sdp), SdpAnswer
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))

    async def subscribe(
        self, publisher_id: str, *, decode: bool = True, drop_every: int = 0
    ) -> RemoteFeed:
        """Receive ``publisher_id``; ``drop_every`` > 0 loses every n-th video RTP packet."""
        asked_at = time.monotonic()
        offer = await self.rpc(
            Subscribe(session_id=self.session_id, publisher_id=publisher_id), SubscriptionOffer
        )
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        feed = RemoteFeed(publisher_id, offer.subscription_id, pc, decode, subscribed_at=asked_at)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if not decode:
                # With its receiver: frames are wrapped on the loop, no thread hop (less
                # CPU taken from the process a benchmark measures on the same cores).
                receiver = next(
                    (t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None
                )
                passthrough.enable_passthrough(track, receiver)
            handler = feed._on_video if track.kind == "video" else feed._on_audio
            feed.tasks.append(asyncio.get_running_loop().create_task(_pump(track, handler)))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        if drop_every:
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    _drop_packets(transceiver, feed, drop_every)
        await pc.setLocalDescription(await pc.createAnswer())
        await self.rpc(
            AnswerSubscription(
                session_id=self.session_id,
                subscription_id=offer.subscription_id,
                sdp=pc.localDescription.sdp,
            ),
            MediaAck,
        )
        self.feeds[publisher_id] = feed
        return feed

    async def unsubscribe(self, publisher_id: str) -> None:
        feed = self.feeds.pop(publisher_id)
        await self.rpc(
            Unsubscribe(session_id=self.session_id, subscription_id=feed.subscription_id),
            MediaAck,
        )
        await _close_feed(feed)

    async def close(self, *, tell_node: bool = True) -> None:
        if tell_node and self.session_id:
            # The node may already be gone in fault tests.
            with contextlib.suppress(Exception):
                await self.rpc(CloseSession(session_id=self.session_id), MediaAck, timeout=5)
            self.session_id = ""
        for feed in list(self.feeds.values()):
            await _close_feed(feed)
        self.feeds.clear()
        if self.publish_pc is not None:
            await self.publish_pc.close()
            self.publish_pc = None


async def _pump(track: MediaStreamTrack, handler: Callable[[Any], None]) -> None:
    try:
        while True:
            handler(await track.recv())
    except MediaStreamError:
        return


async def _close_feed(feed: RemoteFeed) -> None:
    await feed.pc.close()
    for task in feed.tasks:
        task.cancel()
    await asyncio.gather(*feed.tasks, return_exceptions=True)


def _drop_packets(transceiver: Any, feed: RemoteFeed, every: int) -> None:
    """Lose every n-th original video packet before the receiver sees it (not RTX)."""
    receiver = transceiver.receiver
    handle = receiver._handle_rtp_packet
    seen = 0

    async def lossy(packet: Any, arrival_time_ms: int) -> None:
        nonlocal seen
        codecs = transceiver._codecs
        media_pt = codecs[0].payloadType if codecs else None
        if packet.payload_type == media_pt:
            seen += 1
            if seen % every == 0:
                feed.dropped_packets += 1
                return
        await handle(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = lossy


class NodeProcess:
    """A real ``python -m media_node`` child process; its log lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process, node_id: str) -> None:
        self.proc = proc
        self.node_id = node_id
        self.lines: list[str] = []
        self._terminated = False
        self._pump = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(
        cls, bus: Bus, nats_url: str, node_id: str, env: dict[str, str] | None = None
    ) -> "NodeProcess":
        from tests.support.processes import HeartbeatWatch, spawn_service

        watch = await HeartbeatWatch.start(bus, "media_node", node_id)
        proc = await spawn_service(
            "media_node",
            {
                "NATS_URL": nats_url,
                "SERVICE_ID": node_id,
                "HEARTBEAT_INTERVAL_S": "0.5",
                "MEDIA_NODE_REPORT_INTERVAL_S": "0.5",
                **(env or {}),
            },
        )
        node = cls(proc, node_id)
        try:
            await watch.wait_state("ready", timeout=30)
        except TimeoutError:
            await node.stop()
            raise AssertionError("media node never got ready:\n" + node.log_text()) from None
        return node

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace").rstrip())

    def log_text(self) -> str:
        return "\n".join(self.lines[-50:])

    @property
    def tracebacks(self) -> list[str]:
        return [line for line in self.lines if "Traceback" in line]

    def terminate(self) -> None:
        """Send SIGTERM once (a second one during shutdown only adds noise to the log)."""
        if not self._terminated and self.proc.returncode is None:
            self._terminated = True
            self.proc.terminate()

    async def stop(self, timeout: float = 20.0) -> int:
        self.terminate()
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._pump, 5)
        return code
