"""Media helpers for tests of the media node, and the node as a real process.

Synthetic tracks: video whose colour identifies the publisher and whose top rows carry a
16-bit frame counter (black/white blocks that survive VP8), and audio (speech-like bursts,
silence, or switched on and off at run time). :class:`NodeProcess` runs
``python -m media_node`` as a child process. The SFU participant itself is
:mod:`tests.support.sfu_client`.
"""

import asyncio
import fractions
import functools
import time

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from schemas.bus import Bus

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


class PatternVideoTrack(MediaStreamTrack):
    """Solid ``colour`` frames with a frame counter; remembers when each frame was made."""

    kind = "video"

    def __init__(
        self,
        colour: Rgb,
        width: int = 160,
        height: int = 120,
        *,
        textured: bool = False,
        fps: float = 30.0,
    ) -> None:
        super().__init__()
        self.colour = colour
        self.fps = fps
        self._start: float | None = None
        self._pts = 0
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

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        if self.readyState != "live":
            raise MediaStreamError
        step = round(90000 / self.fps)
        if self._start is None:
            self._start = time.time()
        else:
            self._pts += step
            wait = self._start + self._pts / 90000 - time.time()
            if wait < -2 / self.fps:
                # Nobody read frames for a while (the sender was paused): go on from now
                # rather than burst out the frames "missed".
                self._start -= wait
                wait = 0.0
            await asyncio.sleep(wait)
        return self._pts, fractions.Fraction(1, 90000)

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


@functools.lru_cache(maxsize=8)
def speech_like(seconds: float, rate: int = AUDIO_RATE, f0: float = 130.0) -> npt.NDArray[np.int16]:
    """A voiced, formant-shaped, syllable-modulated signal that Silero takes for speech.

    Computed once per shape (tens of milliseconds of numpy on the event loop otherwise, for
    every new track: a stall in every client that starts publishing). Read-only: copy to
    change it.
    """
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
    out.setflags(write=False)
    return out


class SyntheticAudioTrack(MediaStreamTrack):
    """20 ms mono frames at 48 kHz: speech-like bursts (1.2 s on, 0.8 s off) or silence.

    ``speaking`` may be changed at run time (a test moving the active speaker); ``steady``
    speech has no pauses (a speaker who keeps talking).
    """

    kind = "audio"

    def __init__(self, speaking: bool, *, steady: bool = False) -> None:
        super().__init__()
        loop = np.zeros(2 * AUDIO_RATE, dtype=np.int16)
        loop[: int(1.2 * AUDIO_RATE)] = speech_like(1.2)
        if steady:
            loop = np.tile(speech_like(1.0, f0=150.0), 2)
        self._pcm = loop
        self._silence = np.zeros(AUDIO_SAMPLES, dtype=np.int16)
        self.speaking = speaking
        #: When speaking last turned on (monotonic), for latency measurements.
        self.spoke_at: float | None = None
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
        if self.speaking:
            chunk = np.take(self._pcm, range(offset, offset + AUDIO_SAMPLES), mode="wrap")
        else:
            chunk = self._silence
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(chunk.astype(np.int16).tobytes())
        frame.pts = self._timestamp
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


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
