"""The speech-to-text interface every engine implements (after livekit/agents' ``stt.STT``).

An engine turns utterances (16 kHz mono float32 audio plus the language spoken) into text.
Its :class:`SttCapabilities` say which languages it knows, whether it streams (gives words
while audio is still arriving) and whether it transcribes several utterances in one call.
Engines are blocking (they run models); the worker calls them from an executor thread,
never on the event loop.

Interim results over a non-streaming engine are the worker's job: the media node sends the
utterance so far every second of speech, and each is transcribed whole.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
Audio = npt.NDArray[np.float32]


class SttError(Exception):
    """An utterance the engine cannot transcribe (the message never holds transcripts)."""

    #: A short machine-readable reason (dead letters and counters use it).
    code = "stt_failed"


class UnsupportedLanguage(SttError):
    """No engine here knows the language (``language`` is a code, safe to show)."""

    code = "unsupported_language"

    def __init__(self, language: str) -> None:
        super().__init__(f"no speech model for language {language!r}")
        self.language = language


class BadAudio(SttError):
    """The audio is not what the engine accepts (empty, too long, wrong rate, not PCM)."""

    code = "bad_audio"


class ModelUnavailable(SttError):
    """A model could not be found or loaded (the message says where it was looked for)."""

    code = "model_unavailable"


@dataclass(frozen=True, slots=True)
class SttCapabilities:
    """What an engine can do."""

    #: Language codes (primary tags such as ``en``, ``fr``) it transcribes.
    languages: frozenset[str]
    #: Produces words while audio still arrives (ours do not: they re-transcribe).
    streaming: bool = False
    #: Transcribes several utterances in one call faster than one after another.
    batching: bool = False
    #: Longest utterance it accepts, in seconds.
    max_audio_s: float = 30.0


@dataclass(frozen=True, slots=True)
class SttRequest:
    """One utterance: audio in [-1, 1] at 16 kHz, and the language it is spoken in."""

    audio: Audio
    language: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class SttResult:
    """The text of one utterance."""

    text: str
    #: Mean token probability (0..1), or ``None`` if the engine gives none.
    confidence: float | None
    #: The model's probability that there was no speech at all.
    no_speech_probability: float | None
    #: Which model produced it (``tiny.en``, ``base`` ...).
    model: str
    #: Tokens decoded (a text cut by the token budget is worth knowing about).
    tokens: int = 0
    #: The decoder hit its token budget (likely looping or very fast speech).
    truncated: bool = False


class SpeechToText(ABC):
    """A speech recogniser. :meth:`load` once, then :meth:`transcribe` from one thread."""

    #: A label for logs, heartbeats and ``TranscriptSegment.model``.
    name: str
    capabilities: SttCapabilities

    @abstractmethod
    def load(self) -> None:
        """Load the model (blocking; may take seconds). Raises :class:`ModelUnavailable`."""

    @abstractmethod
    def transcribe(self, requests: Sequence[SttRequest]) -> list[SttResult]:
        """Transcribe a batch (blocking), one result per request, in order.

        Raises :class:`UnsupportedLanguage` or :class:`BadAudio` for the whole batch when
        a request is unusable; callers check :meth:`supports` and the audio first.
        """

    def supports(self, language: str) -> bool:
        return primary_tag(language) in self.capabilities.languages

    def check(self, request: SttRequest) -> None:
        """Raise the error :meth:`transcribe` would raise for this one request."""
        if not self.supports(request.language):
            raise UnsupportedLanguage(request.language)
        check_audio(request.audio, self.capabilities.max_audio_s)


def primary_tag(language: str) -> str:
    """``pt-br`` -> ``pt``: speech models know languages, not regions."""
    return language.split("-", 1)[0].lower()


def check_audio(audio: Audio, max_audio_s: float) -> None:
    if audio.ndim != 1 or audio.dtype != np.float32:
        raise BadAudio("audio must be one channel of float32 samples")
    if len(audio) == 0:
        raise BadAudio("empty audio")
    if len(audio) > max_audio_s * SAMPLE_RATE:
        raise BadAudio(f"utterance longer than {max_audio_s:g} s")
    if not np.isfinite(audio).all():
        raise BadAudio("audio holds non-finite samples")


def pcm16_to_float(pcm: bytes) -> Audio:
    """16-bit little-endian PCM to float32 in [-1, 1]; raises :class:`BadAudio`."""
    if len(pcm) % 2:
        raise BadAudio("16-bit PCM must have an even number of bytes")
    samples = np.frombuffer(pcm, dtype="<i2")
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)
