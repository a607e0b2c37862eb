"""A microphone that speaks WAV files (espeak-ng sentences) into any number of aiortc tracks.

A browser has one microphone and sends it on every path at once (its P2P links, an SFU
uplink, a captions uplink during a migration). :class:`Microphone` is that one source:
:meth:`Microphone.say` schedules 16 kHz speech (e.g. :func:`tests.support.speech.speak`,
or :meth:`Microphone.say_wav` a file) on a shared wall-clock timeline, and every
:class:`MicrophoneTrack` made by :meth:`Microphone.track` plays that same timeline in real
time (20 ms frames at 48 kHz, silence in between), so each path hears the same words at
the same moment. ``say`` returns when the sentence has been played, with when its speech
began and ended (for latency measurements).
"""

import asyncio
import fractions
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.support.speech import SAMPLE_RATE, Pcm, read_wav

RATE = 48000
FRAME = 960  # 20 ms
_UP = RATE // SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Utterance:
    """One sentence on the microphone's timeline (monotonic seconds)."""

    started_at: float
    ended_at: float
    samples: npt.NDArray[np.int16]


def upsample(pcm: Pcm) -> npt.NDArray[np.int16]:
    """16 kHz -> 48 kHz by linear interpolation (the Opus encoder band-limits it again)."""
    if len(pcm) == 0:
        return np.zeros(0, dtype=np.int16)
    x = np.arange(len(pcm) * _UP) / _UP
    return np.interp(x, np.arange(len(pcm)), pcm.astype(np.float32)).astype(np.int16)


class Microphone:
    """See the module docstring."""

    def __init__(self, lead_s: float = 0.1) -> None:
        #: Silence before a sentence that starts on a quiet microphone (so a voice
        #: activity detector sees its onset).
        self.lead_s = lead_s
        self._timeline: list[Utterance] = []
        self.spoken: list[Utterance] = []

    def track(self) -> "MicrophoneTrack":
        return MicrophoneTrack(self)

    def schedule(self, pcm: Pcm) -> Utterance:
        """Queue ``pcm`` after whatever is still to be played; returns its place."""
        now = time.monotonic()
        busy_until = max((u.ended_at for u in self._timeline), default=0.0)
        start = max(now + self.lead_s, busy_until + 0.05)
        samples = upsample(pcm)
        utterance = Utterance(start, start + len(samples) / RATE, samples)
        self._timeline = [u for u in self._timeline if u.ended_at > now - 1.0] + [utterance]
        self.spoken.append(utterance)
        return utterance

    async def say(self, pcm: Pcm) -> Utterance:
        """Speak ``pcm`` (16 kHz mono) on every track; returns once it has been played."""
        utterance = self.schedule(pcm)
        await asyncio.sleep(max(0.0, utterance.ended_at - time.monotonic()))
        return utterance

    async def say_wav(self, path: Path) -> Utterance:
        return await self.say(read_wav(path))

    def samples(self, at: float, n: int) -> npt.NDArray[np.int16]:
        """The ``n`` samples (48 kHz) the microphone hears from monotonic time ``at``."""
        out = np.zeros(n, dtype=np.int16)
        end = at + n / RATE
        for u in self._timeline:
            if u.ended_at <= at or u.started_at >= end:
                continue
            first = round((at - u.started_at) * RATE)
            lo, hi = max(0, first), min(len(u.samples), first + n)
            if hi > lo:
                out[lo - first : hi - first] = u.samples[lo:hi]
        return out


class MicrophoneTrack(MediaStreamTrack):
    """One sender's view of a :class:`Microphone` (paced in real time, like a device)."""

    kind = "audio"

    def __init__(self, microphone: Microphone) -> None:
        super().__init__()
        self.microphone = microphone
        #: Duck-compatible with :class:`tests.support.media_peer.SyntheticAudioTrack` (an
        #: SFU test client's track): the microphone decides what is said, not this flag.
        self.speaking = True
        self.spoke_at: float | None = None
        self._start: float | None = None
        self._timestamp = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._timestamp += FRAME
            await asyncio.sleep(self._start + self._timestamp / RATE - time.monotonic())
        chunk = self.microphone.samples(self._start + self._timestamp / RATE, FRAME)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk.tobytes())
        frame.pts = self._timestamp
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame
