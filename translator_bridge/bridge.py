"""Transcript segments in, one caption per language somebody in the call reads out.

For each segment the bridge looks up the call's readers (:mod:`translator_bridge.readers`),
publishes the original text at once on ``caption.<call>.<spoken language>`` (the speaker's
own words), then one translated caption per other language read, each as soon as its
translation is back (the languages are translated concurrently). A language nobody reads
gets nothing. When a translation is impossible or fails, the caption still goes out with
the original text, ``translated=False`` and the reason: never silence.

Captions of one utterance are revisions (partials, then a final, perhaps a continuation);
a translation that comes back after a newer revision of the same utterance and language
was published is dropped, so a listener never sees text go backwards.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from schemas.call_state import CallState
from schemas.captions import Caption, TranscriptSegment, UntranslatedReason
from schemas.logs import get_logger
from translator_bridge.adapters import TextTranslator
from translator_bridge.readers import caption_languages, needs_translation
from translator_bridge.translator import TranslationError

log = get_logger("translator_bridge.bridge")

Publish = Callable[[Caption], Awaitable[None]]
Lookup = Callable[[str], Awaitable[CallState | None]]


@dataclass(slots=True)
class BridgeStats:
    segments: int = 0
    segments_no_call: int = 0
    segments_captions_off: int = 0
    captions: int = 0
    captions_translated: int = 0
    captions_untranslated: int = 0
    captions_stale: int = 0
    untranslated_by_reason: dict[str, int] = field(default_factory=dict)
    translation_ms_total: float = 0.0

    def as_gauges(self) -> dict[str, float]:
        out = {
            "segments": float(self.segments),
            "segments_no_call": float(self.segments_no_call),
            "segments_captions_off": float(self.segments_captions_off),
            "captions": float(self.captions),
            "captions_translated": float(self.captions_translated),
            "captions_untranslated": float(self.captions_untranslated),
            "captions_stale": float(self.captions_stale),
            "translation_ms_mean": round(self.translation_ms_total / self.captions_translated, 2)
            if self.captions_translated
            else 0.0,
        }
        for reason, n in self.untranslated_by_reason.items():
            out[f"untranslated_{reason}"] = float(n)
        return out


class Revisions:
    """The newest revision published per (call, utterance, language), bounded (LRU).

    Ranked by ``(revision, translated)``: at one revision an untranslated caption (a
    timeout) never goes out after a translated one, while a translation may follow the
    original text (a duplicate segment translated the second time). An equal rank may go
    out again (the gateways drop duplicates).
    """

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._newest: OrderedDict[tuple[str, str, str], tuple[int, bool]] = OrderedDict()

    def claim(self, caption: Caption) -> bool:
        """Whether ``caption`` is not older than anything published for its utterance and
        language (and so may go out); records it if so."""
        key = (caption.call_id, caption.utterance_id, caption.language)
        rank = (caption.revision, caption.translated)
        newest = self._newest.get(key)
        if newest is not None and rank < newest:
            return False
        self._newest[key] = rank
        self._newest.move_to_end(key)
        while len(self._newest) > self._size:
            self._newest.popitem(last=False)
        return True


def caption_of(
    segment: TranscriptSegment,
    language: str,
    text: str,
    *,
    translated: bool,
    reason: UntranslatedReason | None,
    translation_ms: float = 0.0,
) -> Caption:
    return Caption(
        call_id=segment.call_id,
        utterance_id=segment.utterance_id,
        speaker_participant_id=segment.participant_id,
        language=language,
        text=text[:2000],
        source_language=segment.language,
        source_text=segment.text,
        is_final=segment.is_final,
        revision=segment.revision,
        translated=translated,
        untranslated_reason=reason,
        speech_ended_at=segment.speech_ended_at,
        timings=segment.timings,
        translation_ms=round(translation_ms, 2),
    )


class CaptionBridge:
    """The per-segment work (see the module docstring)."""

    def __init__(self, *, translator: TextTranslator, lookup: Lookup, publish: Publish) -> None:
        self.translator = translator
        self.lookup = lookup
        self.publish = publish
        self.stats = BridgeStats()
        self.revisions = Revisions()

    async def handle(self, segment: TranscriptSegment) -> None:
        self.stats.segments += 1
        state = await self.lookup(segment.call_id)
        if state is None or state.status == "ended":
            self.stats.segments_no_call += 1
            log.info("bridge.no_call", call_id=segment.call_id)
            return
        if not state.transcription:
            self.stats.segments_captions_off += 1
            return
        languages = caption_languages(state, segment.language, segment.participant_id)
        jobs: list[Awaitable[None]] = []
        for language in languages:
            if not needs_translation(segment.language, language):
                await self._send(
                    caption_of(
                        segment, language, segment.text, translated=False, reason="same_language"
                    )
                )
            elif not segment.text:
                # An empty revision clears an earlier caption: nothing to translate.
                await self._send(caption_of(segment, language, "", translated=True, reason=None))
            else:
                jobs.append(self._translated(segment, language))
        if jobs:
            await asyncio.gather(*jobs)

    async def _translated(self, segment: TranscriptSegment, language: str) -> None:
        started = time.perf_counter()
        try:
            text = await self.translator.translate(segment.text, segment.language, language)
        except TranslationError as exc:
            self.stats.untranslated_by_reason[exc.reason] = (
                self.stats.untranslated_by_reason.get(exc.reason, 0) + 1
            )
            log.warning(
                "bridge.untranslated",
                call_id=segment.call_id,
                source=segment.language,
                target=language,
                reason=exc.reason,
                detail=str(exc),
            )
            await self._send(
                caption_of(segment, language, segment.text, translated=False, reason=exc.reason),
            )
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.stats.translation_ms_total += elapsed_ms
        await self._send(
            caption_of(
                segment,
                language,
                text,
                translated=True,
                reason=None,
                translation_ms=elapsed_ms,
            )
        )

    async def _send(self, caption: Caption) -> None:
        if not self.revisions.claim(caption):
            self.stats.captions_stale += 1
            return
        await self.publish(caption)
        self.stats.captions += 1
        if caption.translated:
            self.stats.captions_translated += 1
        elif caption.untranslated_reason != "same_language":
            self.stats.captions_untranslated += 1
