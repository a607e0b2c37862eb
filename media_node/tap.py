"""The audio tap: a participant's Opus -> 16 kHz mono PCM -> utterances -> ``audio.chunk``.

Only participants whose session asked for transcription are tapped. The forwarding path
only *offers* Opus payloads to the tap (:meth:`AudioTap.feed`, with their RTP timestamp;
never blocks, never raises into forwarding): a bounded queue takes them, and decoding,
resampling and voice activity detection run in a thread pool, one batch at a time per tap
(a decoder is stateful). When the queue is full the packet is dropped and counted;
forwarding never waits for transcription.

Opus DTX: a silent publisher sends one packet every ~400 ms instead of 50 a second. The
tap restores the silence the RTP timestamps say was there (up to ``MAX_GAP_S`` per gap),
so the utterance cutter still sees the pauses that end an utterance.

VAD: Silero (the ONNX model shipped in ``faster_whisper``), run as a stream over 32 ms
windows with its recurrent state kept between windows; or a plain energy threshold
(``MEDIA_NODE_VAD=energy``) where Silero is not wanted (synthetic test tones are not
speech to Silero).
"""

import asyncio
import collections
import contextlib
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import av
import numpy as np
import numpy.typing as npt

from media_node.speaker import level_dbov
from schemas.ids import new_id
from schemas.logs import get_logger
from schemas.media import AudioChunk

if TYPE_CHECKING:
    from media_node.settings import MediaNodeSettings

log = get_logger("media_node.tap")

SAMPLE_RATE = 16000
WINDOW = 512  # samples per VAD window (32 ms at 16 kHz; what Silero expects)
Pcm = npt.NDArray[np.int16]
OPUS_RATE = 48000
FRAME_TICKS = 960  # one 20 ms Opus frame at 48 kHz
#: Longest silence restored for one timestamp gap (enough to end any utterance).
MAX_GAP_S = 1.0
VadKind = Literal["silero", "energy"]


class Vad(Protocol):
    """Speech probability of successive 512-sample windows of one stream."""

    name: str

    def __call__(self, window: Pcm) -> float: ...


class EnergyVad:
    """Speech when the window's RMS level is above ``threshold_dbov``."""

    name = "energy"

    def __init__(self, threshold_dbov: float = -45.0) -> None:
        self.threshold_dbov = threshold_dbov

    def __call__(self, window: Pcm) -> float:
        return 1.0 if level_dbov(window) > self.threshold_dbov else 0.0


class SileroVad:
    """Silero VAD v6 from ``faster_whisper``, streamed: state and context carried over."""

    name = "silero"
    _CONTEXT = 64

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session: Any = get_vad_model().session  # thread-safe; state is ours
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, self._CONTEXT), dtype=np.float32)

    def __call__(self, window: Pcm) -> float:
        audio = (window.astype(np.float32) / 32768.0).reshape(1, -1)
        batch = np.concatenate([self._context, audio], axis=1)
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = audio[:, -self._CONTEXT :]
        return float(np.asarray(out).reshape(-1)[0])


def make_vad(kind: VadKind) -> Vad:
    return SileroVad() if kind == "silero" else EnergyVad()


@dataclass(frozen=True, slots=True)
class Utterance:
    """One chunk of an utterance: its audio from the utterance's start up to now."""

    utterance_id: str
    sequence: int
    is_final: bool
    start_sample: int
    pcm: Pcm
    #: Where the speech itself ended (the chunk may hold a little silence after it).
    speech_end_sample: int


@dataclass
class UtteranceCutter:
    """Turns windows with a speech probability into utterance chunks, for live captions.

    Speech starts at the first window above ``threshold`` (with ``pre_roll_s`` of audio
    before it, so the first syllable is not clipped). Every chunk holds the utterance
    *from its start*, so each can be transcribed alone and a newer one replaces the older:

    - while the person speaks, a non-final chunk after every ``max_chunk_s`` of new
      speech (interim captions, so a listener is never far behind a long speaker);
    - at the first pause of ``pause_s``, a final chunk: captions need not wait for the
      whole end-of-utterance silence;
    - if speech resumes before ``min_silence_s`` of silence, the utterance continues
      (same id, higher sequence) and its next chunk replaces that final; after
      ``min_silence_s`` the utterance is over;
    - past ``max_utterance_s`` a final chunk is cut and a new utterance begins (a
      recogniser window is 30 s, and a chunk must fit in one bus message).

    Blips with less than ``min_speech_s`` of speech are dropped.
    """

    threshold: float = 0.5
    min_silence_s: float = 0.6
    pause_s: float = 0.2
    pre_roll_s: float = 0.2
    max_chunk_s: float = 1.0
    min_speech_s: float = 0.25
    max_utterance_s: float = 15.0
    #: Silence kept after the last speech window in a chunk.
    tail_s: float = 0.1
    position: int = 0  # samples seen so far
    _pre: collections.deque[Pcm] = field(default_factory=collections.deque)
    _current: list[Pcm] = field(default_factory=list)
    _current_len: int = 0
    _current_start: int = 0
    _speech_samples: int = 0
    _speech_end: int = 0
    _since_chunk: int = 0
    _silence: int = 0
    _final_sent: bool = False
    _utterance_id: str | None = None
    _sequence: int = 0

    @property
    def in_speech(self) -> bool:
        return self._utterance_id is not None

    def push(self, window: Pcm, probability: float) -> list[Utterance]:
        out: list[Utterance] = []
        start = self.position
        self.position += len(window)
        speech = probability >= self.threshold
        if self._utterance_id is None:
            if not speech:
                self._pre.append(window)
                while len(self._pre) * WINDOW > self.pre_roll_s * SAMPLE_RATE:
                    self._pre.popleft()
                return out
            self._begin(start - sum(len(w) for w in self._pre), [*self._pre])
            self._pre.clear()
        self._current.append(window)
        self._current_len += len(window)
        if speech:
            self._speech_samples += len(window)
            self._speech_end = self.position
            self._since_chunk += len(window)
            self._silence = 0
            self._final_sent = False
        else:
            self._silence += len(window)
        enough = self._speech_samples >= self.min_speech_s * SAMPLE_RATE or self._sequence > 0
        if self._silence >= self.min_silence_s * SAMPLE_RATE:
            if enough and not self._final_sent:
                out.append(self._emit(final=True))
            self._utterance_id = None
            self._current = []
            self._current_len = 0
        elif self._silence >= self.pause_s * SAMPLE_RATE:
            if enough and not self._final_sent:
                out.append(self._emit(final=True))
        elif self._current_len >= self.max_utterance_s * SAMPLE_RATE:
            out.append(self._emit(final=True))
            self._begin(self.position, [])
        elif speech and self._since_chunk >= self.max_chunk_s * SAMPLE_RATE:
            out.append(self._emit(final=False))
        return out

    def flush(self) -> list[Utterance]:
        """The stream ended: close the utterance in progress."""
        if self._utterance_id is None or not self._current or self._final_sent:
            self._utterance_id = None
            return []
        utterance = self._emit(final=True)
        self._utterance_id = None
        return [utterance]

    def _begin(self, start_sample: int, pre: list[Pcm]) -> None:
        self._utterance_id = new_id()
        self._sequence = 0
        self._current = pre
        self._current_len = sum(len(w) for w in pre)
        self._current_start = start_sample
        self._speech_samples = 0
        self._speech_end = start_sample
        self._since_chunk = 0
        self._silence = 0
        self._final_sent = False

    def _emit(self, *, final: bool) -> Utterance:
        assert self._utterance_id is not None
        # The audio up to a little after the last speech; the rest of a pause is left out
        # of this chunk (a continuation will hold it, with what follows).
        end = min(self._current_start + self._current_len, self._speech_end + self._tail())
        pcm = np.concatenate(self._current).astype(np.int16)[: end - self._current_start]
        utterance = Utterance(
            self._utterance_id,
            self._sequence,
            final,
            self._current_start,
            pcm,
            self._speech_end,
        )
        self._sequence += 1
        self._since_chunk = 0
        self._final_sent = final
        return utterance

    def _tail(self) -> int:
        return round(self.tail_s * SAMPLE_RATE)

    @classmethod
    def factory(cls, settings: "MediaNodeSettings") -> Callable[[], "UtteranceCutter"]:
        """A maker of cutters configured by ``MEDIA_NODE_UTTERANCE_*``."""
        return functools.partial(
            cls,
            min_silence_s=settings.media_node_utterance_min_silence_s,
            pause_s=settings.media_node_utterance_pause_s,
            max_chunk_s=settings.media_node_utterance_interim_s,
            max_utterance_s=settings.media_node_utterance_max_s,
        )


class OpusTo16k:
    """Decodes Opus packets and resamples them to 16 kHz mono s16 (stateful, one thread)."""

    def __init__(self) -> None:
        self._decoder: Any = av.CodecContext.create("libopus", "r")
        self._resampler: Any = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self.errors = 0

    def decode(self, payload: bytes) -> Pcm:
        pieces: list[Pcm] = []
        try:
            for frame in self._decoder.decode(av.Packet(payload)):
                for out in self._resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1).astype(np.int16))
        except av.FFmpegError:
            self.errors += 1
        if not pieces:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(pieces)


@dataclass(slots=True)
class TapStats:
    """Counters shared by the taps of a node (read by the heartbeat)."""

    packets_in: int = 0
    packets_dropped: int = 0
    chunks_published: int = 0


ChunkSink = Callable[[AudioChunk], Awaitable[None]]
LevelSink = Callable[[float], None]


class AudioTap:
    """The tap of one participant's microphone (see the module docstring)."""

    def __init__(
        self,
        *,
        call_id: str,
        participant_id: str,
        language: str,
        vad: VadKind,
        executor: Executor,
        publish: ChunkSink,
        stats: TapStats,
        on_level: LevelSink | None = None,
        queue_size: int = 250,
        new_cutter: Callable[[], UtteranceCutter] = UtteranceCutter,
    ) -> None:
        self.call_id = call_id
        self.participant_id = participant_id
        self.language = language
        self.vad_kind = vad
        self._executor = executor
        self._publish = publish
        self._stats = stats
        self._on_level = on_level
        self._queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue(maxsize=queue_size)
        self._last_ts: int | None = None
        self._decoder: OpusTo16k | None = None
        self._vad: Vad | None = None
        self._cutter = new_cutter()
        self._carry = np.zeros(0, dtype=np.int16)
        self._started_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"tap:{self.participant_id}"
        )

    def feed(self, payload: bytes, rtp_timestamp: int = -1) -> None:
        """Offer one Opus payload (event loop; never blocks, drops when behind)."""
        self._stats.packets_in += 1
        if self._started_at is None:
            self._started_at = datetime.now(UTC)
        try:
            self._queue.put_nowait((payload, rtp_timestamp))
        except asyncio.QueueFull:
            self.dropped += 1
            self._stats.packets_dropped += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        ended = False
        while not ended:
            first = await self._queue.get()
            batch: list[tuple[bytes, int]] = []
            if first is None:
                ended = True
            else:
                batch.append(first)
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    ended = True
                    break
                batch.append(item)
            try:
                chunks, levels = await loop.run_in_executor(
                    self._executor, self._process, batch, ended
                )
            except Exception as exc:
                log.exception(
                    "tap.failed",
                    call_id=self.call_id,
                    participant_id=self.participant_id,
                    error=type(exc).__name__,
                )
                continue
            if self._on_level is not None:
                try:
                    for lvl in levels:
                        self._on_level(lvl)
                except Exception as exc:
                    log.warning(
                        "tap.level_failed",
                        call_id=self.call_id,
                        participant_id=self.participant_id,
                        error=type(exc).__name__,
                    )
            for chunk in chunks:
                try:
                    await self._publish(chunk)
                    self._stats.chunks_published += 1
                except Exception as exc:  # the bus is down: this utterance is lost
                    log.warning(
                        "tap.publish_failed",
                        call_id=self.call_id,
                        participant_id=self.participant_id,
                        error=type(exc).__name__,
                    )

    def _process(
        self, batch: list[tuple[bytes, int]], ended: bool
    ) -> tuple[list[AudioChunk], list[float]]:
        """Runs in the executor: decode, resample, VAD, cut."""
        if self._decoder is None:
            self._decoder = OpusTo16k()
            self._vad = make_vad(self.vad_kind)
        assert self._vad is not None
        pieces = [self._carry]
        for payload, timestamp in batch:
            pieces.append(self._silence_before(timestamp))
            pieces.append(self._decoder.decode(payload))
        pcm = np.concatenate(pieces)
        full = len(pcm) // WINDOW * WINDOW
        self._carry = pcm[full:]
        utterances: list[Utterance] = []
        levels: list[float] = []
        for i in range(0, full, WINDOW):
            window = pcm[i : i + WINDOW]
            levels.append(level_dbov(window))
            utterances += self._cutter.push(window, self._vad(window))
        if ended:
            utterances += self._cutter.flush()
        return [self._chunk(u) for u in utterances], levels

    def _silence_before(self, timestamp: int) -> Pcm:
        """The silence DTX left out before this packet (see the module docstring)."""
        last, self._last_ts = self._last_ts, timestamp
        if timestamp < 0 or last is None or last < 0:
            return np.zeros(0, dtype=np.int16)
        gap = ((timestamp - last) & 0xFFFFFFFF) - FRAME_TICKS
        if gap <= 0 or gap > 0x7FFFFFFF:
            return np.zeros(0, dtype=np.int16)
        samples = min(gap, int(MAX_GAP_S * OPUS_RATE)) * SAMPLE_RATE // OPUS_RATE
        return np.zeros(samples, dtype=np.int16)

    def _chunk(self, u: Utterance) -> AudioChunk:
        start_s = u.start_sample / SAMPLE_RATE
        end_s = (u.start_sample + len(u.pcm)) / SAMPLE_RATE
        base = self._started_at or datetime.now(UTC)
        return AudioChunk(
            call_id=self.call_id,
            participant_id=self.participant_id,
            utterance_id=u.utterance_id,
            sequence=u.sequence,
            is_final=u.is_final,
            start_s=round(start_s, 3),
            end_s=round(end_s, 3),
            started_at=base + timedelta(seconds=start_s),
            sample_rate=SAMPLE_RATE,
            language=self.language,
            vad=self.vad_kind,
            speech_end_s=round(u.speech_end_sample / SAMPLE_RATE, 3),
            pcm=u.pcm.astype("<i2").tobytes(),
        )

    async def stop(self) -> None:
        """Close the utterance in progress and stop."""
        if self._task is None:
            return
        # The end marker must get in even when the queue is full (the tap fell behind),
        # or stop() would wait out its timeout: make room by dropping the oldest packet.
        while True:
            try:
                self._queue.put_nowait(None)
                break
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self.dropped += 1
                self._stats.packets_dropped += 1
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 2.0)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
