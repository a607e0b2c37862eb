"""Load generators for the SFU benchmarks: pre-encoded publishers and counting receivers.

Two cores cannot run 50 encoding and decoding browsers next to the node they measure, so
the load is made cheap without changing what the node sees:

- :class:`Clip`: a VP8 clip (640x480 at 1.2 Mbit/s, or a smaller grid tile) encoded
  once (a delta chain with a keyframe every
  ``gop`` frames, plus an intra version of every frame for on-demand keyframes) and a few
  Opus packets (speech, and the small packets Opus DTX sends for silence);
- :class:`RawPublisher`: a real aiortc peer connection (ICE, DTLS, SRTP) whose senders
  never start; it writes RTP itself through :class:`media_node.transport.PacketTransport`:
  VP8 packetised per RFC 7741 (15-bit picture ids), Opus with the audio-level extension,
  30 fps / 50 packets per second, a keyframe (the intra version) after each PLI, and no
  video while told to pause (``VideoDemandChanged``). A silent publisher sends one DTX
  packet every 400 ms, as Chromium does;
- :class:`CountingReceiver`: a real peer connection whose receivers never start; it counts
  SRTP packets per SSRC (and frames, by the marker bit) from the cleartext RTP header, in
  the datagram callback, without decrypting. ``decode_on`` decrypts the slots it is told
  to watch and decodes their first keyframe with libvpx (speaker-switch probes).

It talks to a node of the new contract (sessions with slots) or to the frame-path
baseline's old per-subscription verbs (:class:`LegacySubscribe` ...: the same JSON the
old node decodes), so both forwarding paths see the very same load.
"""

import asyncio
import contextlib
import fractions
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import av
import msgspec
import numpy as np
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media_node import aiortc_hooks
from media_node.rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    HeaderTemplate,
    RtpPacket,
    parse_vp8,
)
from media_node.transport import PacketTransport, TransportStats
from schemas.media import MediaRequest
from tests.support.media_peer import speech_like

WIDTH, HEIGHT, FPS = 640, 480, 30
MAX_PAYLOAD = 1180


@dataclass
class Clip:
    """Pre-encoded media (see the module docstring)."""

    deltas: list[bytes]
    intras: list[bytes]
    speech: list[bytes]
    silence: bytes

    @classmethod
    def make(
        cls,
        cache: Path,
        *,
        frames: int = 150,
        tint: tuple[int, int, int] = (0, 0, 0),
        size: tuple[int, int] = (WIDTH, HEIGHT),
        bitrate: int = 1_200_000,
    ) -> "Clip":
        width, height = size
        name = f"clip-{width}x{height}-{bitrate}-{frames}-{'-'.join(map(str, tint))}.msgpack"
        path = cache / name
        if path.exists():
            raw = msgspec.msgpack.decode(path.read_bytes())
            return cls(raw["deltas"], raw["intras"], raw["speech"], raw["silence"])
        cache.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(3)
        base = np.zeros((height, width, 3), dtype=np.int16)
        base[:, :] = (110 + tint[0], 110 + tint[1], 110 + tint[2])
        images = []
        for i in range(frames):
            noise = rng.integers(-24, 25, size=(height, width, 3), dtype=np.int16)
            image = np.clip(base + noise, 0, 255).astype(np.uint8)
            x = (i * 8) % (width - width // 8)
            image[height // 3 : height // 2, x : x + width // 8] = 255  # something that moves
            images.append(image)
        deltas = _encode(images, gop=100, bitrate=bitrate)
        intras = _encode(images, gop=1, bitrate=bitrate)
        speech, silence = _opus()
        clip = cls(deltas, intras, speech, silence)
        path.write_bytes(
            msgspec.msgpack.encode(
                {"deltas": deltas, "intras": intras, "speech": speech, "silence": silence}
            )
        )
        return clip


def _encode(images: list[Any], *, gop: int, bitrate: int) -> list[bytes]:
    codec: Any = av.CodecContext.create("libvpx", "w")
    codec.height, codec.width = images[0].shape[:2]
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = bitrate
    codec.framerate = fractions.Fraction(FPS, 1)
    codec.time_base = fractions.Fraction(1, FPS)
    codec.gop_size = gop
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[bytes] = []
    for i, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        if gop == 1:
            frame.pict_type = av.video.frame.PictureType.I
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return out[: len(images)]


def _opus() -> tuple[list[bytes], bytes]:
    codec: Any = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = 32000
    pcm = np.concatenate([speech_like(1.0), np.zeros(960 * 5, dtype=np.int16)])
    packets: list[bytes] = []
    for i in range(0, len(pcm) - 960 + 1, 960):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(pcm[i : i + 960].tobytes())
        frame.sample_rate = 48000
        frame.pts = i
        packets += [bytes(p) for p in codec.encode(frame)]
    return packets[:50], min(packets[-3:], key=len)


def vp8_payloads(frame: bytes, picture_id: int) -> list[bytes]:
    """RFC 7741 packetisation with a 15-bit picture id."""
    chunks = [frame[i : i + MAX_PAYLOAD] for i in range(0, len(frame), MAX_PAYLOAD)] or [b""]
    pid = struct.pack(">H", 0x8000 | (picture_id & 0x7FFF))
    return [bytes([0x90 if i == 0 else 0x80, 0x80]) + pid + c for i, c in enumerate(chunks)]


class LegacySubscribe(msgspec.Struct, tag="media.subscribe", tag_field="type", kw_only=True):
    """The frame path's (the old node's) subscribe verb, for the baseline only."""

    verb: ClassVar[str] = "subscribe"
    session_id: str
    publisher_id: str


class LegacyOffer(msgspec.Struct, tag="media.subscription_offer", tag_field="type", kw_only=True):
    session_id: str
    subscription_id: str
    sdp: str


class LegacyAnswer(msgspec.Struct, tag="media.answer_subscription", tag_field="type", kw_only=True):
    verb: ClassVar[str] = "answer_subscription"
    session_id: str
    subscription_id: str
    sdp: str


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


@dataclass
class _Stream:
    template: HeaderTemplate
    seq: int = 1000
    ts: int = 0


class RawPublisher:
    """See the module docstring."""

    def __init__(
        self,
        clip: Clip,
        *,
        audio: bool = True,
        video: bool = True,
        speaking: bool = False,
        stats: TransportStats | None = None,
    ) -> None:
        self.clip = clip
        self.audio = audio
        self.video = video
        self.speaking = speaking
        self.spoke_at = 0.0
        self.paused = False
        self.pc = _pc()
        self.stats = stats or TransportStats()
        self._params: dict[str, Any] = {}
        self._ssrcs: dict[str, int] = {}
        self._transport: PacketTransport | None = None
        self._streams: dict[str, _Stream] = {}
        self._keyframe = True
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        self.sent_video = 0

    async def offer(self) -> str:
        for kind, on in (("audio", self.audio), ("video", self.video)):
            if not on:
                continue
            t = self.pc.addTransceiver(kind, direction="sendonly")
            self._ssrcs[kind] = aiortc_hooks.sender_ssrcs(t.sender)[0]
            aiortc_hooks.stub_sender(t.sender, self._on_send(kind))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def _on_send(self, kind: str) -> Callable[[Any], None]:
        def on_send(params: Any) -> None:
            self._params[kind] = params
            if self._transport is None:
                dtls = self.pc.getTransceivers()[0].sender.transport
                self._transport = PacketTransport(
                    dtls, on_rtp=lambda d, a: None, on_rtcp=self._on_rtcp, stats=self.stats
                )
            ids = {e.uri: e.id for e in params.headerExtensions}
            self._streams[kind] = _Stream(
                HeaderTemplate(
                    payload_type=params.codecs[0].payloadType,
                    ssrc=self._ssrcs[kind],
                    mid=params.muxId or "",
                    mid_id=ids.get(URI_MID, 0),
                    abs_send_time_id=ids.get(URI_ABS_SEND_TIME, 0),
                    audio_level_id=ids.get(URI_AUDIO_LEVEL, 0) if kind == "audio" else 0,
                )
            )
            if len(self._streams) == self.audio + self.video:
                self._start()

        return on_send

    def _on_rtcp(self, data: bytes) -> None:
        if data == b"":
            return
        # A PLI (payload-specific feedback, FMT 1) anywhere in the compound: a keyframe.
        pos = 0
        while pos + 4 <= len(data):
            fmt, pt = data[pos] & 0x1F, data[pos + 1]
            if pt == 206 and fmt in (1, 4):
                self._keyframe = True
            pos += 4 * (struct.unpack_from(">H", data, pos + 2)[0] + 1)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.video:
            self._tasks.append(loop.create_task(self._video()))
        if self.audio:
            self._tasks.append(loop.create_task(self._audio()))
        self.connected.set()

    def _send(self, kind: str, payload: bytes, marker: int, level: int = -1) -> None:
        stream = self._streams[kind]
        header = stream.template.write(stream.seq, stream.ts, marker, level)
        stream.seq = (stream.seq + 1) & 0xFFFF
        if self._transport is not None:
            self._transport.send_rtp(b"".join((header, payload)))

    async def _video(self) -> None:
        index = 0
        picture = 0
        start = time.monotonic()
        tick = 0
        was_paused = False
        while True:
            tick += 1
            late = time.monotonic() - (start + tick / FPS)
            if late > 2 / FPS:  # behind (a busy load generator): skip, as a camera would
                tick += int(late * FPS)
            await asyncio.sleep(max(0.0, start + tick / FPS - time.monotonic()))
            stream = self._streams["video"]
            stream.ts = (stream.ts + 90000 // FPS) & 0xFFFFFFFF
            index = (index + 1) % len(self.clip.deltas)
            if self.paused:
                was_paused = True
                continue
            if was_paused:
                was_paused, self._keyframe = False, True  # a resumed camera starts whole
            keyframe, self._keyframe = self._keyframe, False
            frame = self.clip.intras[index] if keyframe else self.clip.deltas[index]
            payloads = vp8_payloads(frame, picture)
            picture += 1
            for i, payload in enumerate(payloads):
                self._send("video", payload, int(i == len(payloads) - 1))
            self.sent_video += 1

    async def _audio(self) -> None:
        start = time.monotonic()
        tick = 0
        while True:
            tick += 1
            late = time.monotonic() - (start + tick * 0.02)
            if late > 0.04:
                tick += int(late / 0.02)
            await asyncio.sleep(max(0.0, start + tick * 0.02 - time.monotonic()))
            stream = self._streams["audio"]
            stream.ts = (stream.ts + 960) & 0xFFFFFFFF
            if self.speaking:
                self._send("audio", self.clip.speech[tick % len(self.clip.speech)], 0, 20)
            elif tick % 20 == 0:  # Opus DTX: one small packet every 400 ms of silence
                self._send("audio", self.clip.silence, 0, 127)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
        await self.pc.close()


@dataclass
class SlotCount:
    """What a counting receiver saw of one SSRC."""

    packets: int = 0
    frames: int = 0
    frame_times: list[float] = field(default_factory=list)


class CountingReceiver:
    """See the module docstring."""

    def __init__(self, *, keep_frame_times: bool = False) -> None:
        self.pc = _pc()
        self.counts: dict[int, SlotCount] = {}
        self.keep_frame_times = keep_frame_times
        self._transport: PacketTransport | None = None
        #: SSRC -> callback(first decoded keyframe time) for the slots being watched.
        self._watch: dict[int, Callable[[float, Any], None]] = {}
        self._frames: dict[int, list[bytes]] = {}
        self._decoder: Any = None

    async def answer(self, offer_sdp: str) -> str:
        pc = self.pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        for t in pc.getTransceivers():
            aiortc_hooks.stub_receiver(t.receiver, self._on_receive)
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    def _on_receive(self, params: Any) -> None:
        del params
        if self._transport is not None:
            return
        dtls = self.pc.getTransceivers()[0].receiver.transport
        self._transport = PacketTransport(
            dtls, on_rtp=self._on_rtp, on_rtcp=lambda d: None, stats=TransportStats()
        )
        connection = aiortc_hooks.ice_connection(dtls)
        for protocol in aiortc_hooks.local_protocols(connection):
            # Outermost: count every datagram first, decrypt only the watched slots.
            protocol.datagram_received = self._counting(protocol.datagram_received)

    def _counting(self, original: Any) -> Any:
        def datagram_received(data: bytes, addr: Any) -> None:
            if len(data) > 12 and 127 < data[0] < 192 and not 192 <= data[1] <= 223:
                ssrc = int.from_bytes(data[8:12], "big")
                count = self.counts.get(ssrc)
                if count is None:
                    count = self.counts[ssrc] = SlotCount()
                count.packets += 1
                if data[1] & 0x80:
                    count.frames += 1
                    if self.keep_frame_times:
                        count.frame_times.append(time.monotonic())
                if ssrc not in self._watch:
                    return
            original(data, addr)

        return datagram_received

    def watch(self, ssrc: int, on_decoded: Callable[[float, Any], None]) -> None:
        """Decrypt ``ssrc`` and decode each of its keyframes (only those: they are rare)."""
        self._frames[ssrc] = []
        self._watch[ssrc] = on_decoded

    def _on_rtp(self, data: bytes, arrival: float) -> None:
        packet = RtpPacket(data, arrival)
        callback = self._watch.get(packet.ssrc)
        if callback is None:
            return
        parse_vp8(packet)
        parts = self._frames[packet.ssrc]
        if packet.frame_start:
            parts.clear()
            if not packet.keyframe:
                return
            parts.append(b"")
        if not parts:
            return
        start = packet.payload_start
        # Skip the VP8 payload descriptor (X, I with M, no L/T/K here).
        skip = 4 if packet.picture_id_bits == 15 else 3 if packet.picture_id_at >= 0 else 1
        parts.append(data[start + skip : packet.payload_end])
        if not packet.marker:
            return
        decoder = av.CodecContext.create("vp8", "r")  # a keyframe needs no history
        frames = decoder.decode(av.Packet(b"".join(parts)))
        parts.clear()
        if frames:
            callback(arrival, frames[0].to_ndarray(format="rgb24"))

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        await self.pc.close()


async def rpc(bus: Any, node_id: str, request: MediaRequest | msgspec.Struct, reply: Any) -> Any:
    from schemas import subjects

    verb = type(request).verb  # type: ignore[attr-defined]
    return await bus.request(subjects.media_rpc(node_id, verb), request, reply, timeout=30)


async def close_all(*things: Any) -> None:
    for thing in things:
        with contextlib.suppress(Exception):
            await thing.close()
