"""Whisper through CTranslate2 (the engine inside faster-whisper), tuned for live captions.

faster-whisper pads every input to Whisper's 30 s window, so the encoder costs as much for a
2 s utterance as for a 30 s one. This engine encodes only the utterance plus
``pad_s`` of silence (``TrimmedWindow``), which is 3-5x faster on a CPU. A trimmed window
alone makes the decoder loop ("Can everyone hear me. Can everyone hear me. Can ..."), so
the decoder gets a token budget in proportion to the audio, ``base_tokens + tokens_per_s
x seconds``, and about 2 s of padding after the speech (measured in
``shared/notes/whisper-latency.md``; ``bench/captions.py`` measures it again, full window
against trimmed, on our sentence sets).

What a loop leaves even within the budget (the sentence, then its start again: "Can
everyone hear me clearly now? Can everyone hear") is cut off (:func:`cut_repeated_tail`):
when the text's tail only repeats text before it, from the first repetition on.

Decoding is greedy (beam 1), without timestamps and without conditioning on earlier text,
with the spoken language given (never detected: detection on short utterances is slow and
wrong). Concurrent utterances are decoded as one batch.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transcriber.engine import (
    SAMPLE_RATE,
    Audio,
    ModelUnavailable,
    SpeechToText,
    SttCapabilities,
    SttRequest,
    SttResult,
    UnsupportedLanguage,
    check_audio,
    primary_tag,
)

_WINDOW_S = 30.0
_HOP = 160  # samples per mel frame
#: Whisper's rule for "this was no speech": a likely no-speech token and an unlikely text.
_NO_SPEECH_PROBABILITY = 0.6
_NO_SPEECH_LOGPROB = -1.0


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """How much audio the encoder sees, and how many tokens the decoder may write.

    ``trimmed``: the utterance plus ``pad_s`` of silence; ``full``: Whisper's 30 s window
    (the reference for word error rates). The budget applies to both.
    """

    trimmed: bool = True
    pad_s: float = 2.0
    base_tokens: int = 8
    tokens_per_s: float = 5.0

    def budget(self, seconds: float) -> int:
        return self.base_tokens + math.ceil(self.tokens_per_s * seconds)


def cut_repeated_tail(tokens: Sequence[int], *, truncated: bool) -> list[int]:
    """``tokens`` without a tail that merely repeats earlier tokens (a decoder loop).

    The tail from position ``j`` is a loop when it equals the tokens at some earlier
    position ``k < j`` (``tokens[j:] == tokens[k:k + n - j]``); the earliest such ``j``
    wins. A tail of two tokens counts only when the decoder ran out of budget (it was
    still looping); one of three or more counts always: real speech seldom ends by
    repeating its own words. Single repeated tokens are never cut.
    """
    n = len(tokens)
    shortest = 2 if truncated else 3
    for j in range(1, n - shortest + 1):
        tail = tokens[j:]
        for k in range(j):
            if list(tokens[k : k + len(tail)]) == list(tail):
                return list(tokens[:j])
    return list(tokens)


class WhisperEngine(SpeechToText):
    """One CTranslate2 Whisper model folder (``config.json``, ``model.bin``, tokenizer)."""

    def __init__(
        self,
        *,
        name: str,
        folder: Path,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        window: WindowPolicy | None = None,
    ) -> None:
        self.name = name
        self.folder = folder
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.window = window or WindowPolicy()
        self.capabilities = SttCapabilities(
            languages=frozenset(), batching=True, max_audio_s=_WINDOW_S - self.window.pad_s
        )
        self._model: Any = None
        self._extractor: Any = None
        self._tokenizers: dict[str, Any] = {}
        self._suppress: list[int] = [-1]

    def load(self) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        try:
            model = WhisperModel(
                str(self.folder),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=1,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError variants
            raise ModelUnavailable(
                f"Whisper model {self.name} in {self.folder} did not load: {type(exc).__name__}"
            ) from exc
        self._model = model
        self._extractor = model.feature_extractor
        multilingual = bool(model.model.is_multilingual)
        languages = frozenset(_LANGUAGE_CODES) if multilingual else frozenset({"en"})
        self.capabilities = SttCapabilities(
            languages=languages, batching=True, max_audio_s=_WINDOW_S - self.window.pad_s
        )
        # The first call of a model allocates its buffers (several times slower): pay it
        # here, before the worker reports ready, not on someone's first sentence.
        warm_up = "en" if "en" in languages else next(iter(sorted(languages)))
        self.transcribe([SttRequest(np.zeros(SAMPLE_RATE, dtype=np.float32), warm_up)])

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _tokenizer(self, language: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        tag = primary_tag(language)
        found = self._tokenizers.get(tag)
        if found is None:
            if tag not in self.capabilities.languages:
                raise UnsupportedLanguage(language)
            found = Tokenizer(
                self._model.hf_tokenizer,
                bool(self._model.model.is_multilingual),
                task="transcribe",
                language=tag,
            )
            self._tokenizers[tag] = found
        return found

    def _features(self, audios: Sequence[Audio]) -> Any:
        """One mel batch: every utterance padded with silence to the same length."""
        import ctranslate2

        if self.window.trimmed:
            longest = max(len(a) for a in audios)
            length = min(
                longest + round(self.window.pad_s * SAMPLE_RATE), int(_WINDOW_S * SAMPLE_RATE)
            )
            # The encoder halves the frame count: keep it even.
            length = (length // (2 * _HOP)) * (2 * _HOP)
        else:
            length = int(_WINDOW_S * SAMPLE_RATE)
        mels = []
        for audio in audios:
            padded = np.zeros(length, dtype=np.float32)
            padded[: min(len(audio), length)] = audio[:length]
            mel = self._extractor(padded, padding=0)
            mels.append(mel[:, : length // _HOP])
        batch = np.ascontiguousarray(np.stack(mels).astype(np.float32))
        return ctranslate2.StorageView.from_array(batch)

    def transcribe(self, requests: Sequence[SttRequest]) -> list[SttResult]:
        if not requests:
            return []
        if self._model is None:
            raise ModelUnavailable(f"Whisper model {self.name} is not loaded")
        for request in requests:
            check_audio(request.audio, self.capabilities.max_audio_s)
        tokenizers = [self._tokenizer(r.language) for r in requests]
        prompts = [[*t.sot_sequence, t.no_timestamps] for t in tokenizers]
        budgets = [self.window.budget(r.seconds) for r in requests]
        features = self._features([r.audio for r in requests])
        longest_prompt = max(len(p) for p in prompts)
        outputs = self._model.model.generate(
            features,
            prompts,
            beam_size=1,
            max_length=min(longest_prompt + max(budgets), self._model.max_length),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        results: list[SttResult] = []
        for output, tokenizer, budget in zip(outputs, tokenizers, budgets, strict=True):
            tokens = [t for t in output.sequences_ids[0] if t < tokenizer.eot]
            # In a batch the longest utterance sets the shared limit; hold each shorter
            # one to its own budget, or it may loop into the extra room.
            truncated = len(tokens) >= budget
            tokens = cut_repeated_tail(tokens[:budget], truncated=truncated)
            length = max(len(output.sequences_ids[0]), 1)
            avg_logprob = float(output.scores[0]) * length / (length + 1)
            no_speech = float(output.no_speech_prob)
            text = tokenizer.decode(tokens).strip()
            if no_speech > _NO_SPEECH_PROBABILITY and avg_logprob < _NO_SPEECH_LOGPROB:
                text = ""
            results.append(
                SttResult(
                    text=text,
                    confidence=round(math.exp(avg_logprob), 4),
                    no_speech_probability=round(no_speech, 4),
                    model=self.name,
                    tokens=len(tokens),
                    truncated=truncated,
                )
            )
        return results
