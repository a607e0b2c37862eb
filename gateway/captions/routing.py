"""Who among a call's participants receives a caption, and in what shape (pure).

The translator bridge publishes one caption per utterance revision and language on
``caption.<call>.<lang>``; a gateway receives every language of the calls it holds sockets
for and gives each socket only its own:

- a listener receives the captions in the language it reads (its ``caption_language``, or
  the language it speaks when it chose none);
- the speaker receives its own words: the caption in the language spoken (the original
  text), never a translation of itself;
- nobody receives captions while the call's transcription is off (a caption in flight
  when it was turned off is dropped here).

Per utterance and language only a higher revision goes out, or at the same revision a
translation of a caption that went out untranslated (:class:`Revisions`): delivery on the
bus is at least once, and a late lower revision must not replace a newer caption on
anyone's screen.
"""

from collections import OrderedDict
from typing import Any

from gateway.state_machine import find_participant
from schemas.call_state import CallState
from schemas.captions import Caption


def reads(state: CallState, participant_id: str, caption: Caption) -> bool:
    """Whether ``participant_id`` receives ``caption`` (see the module docstring)."""
    p = find_participant(state, participant_id)
    if p is None or not state.transcription or state.status == "ended":
        return False
    if participant_id == caption.speaker_participant_id:
        return caption.language == caption.source_language
    return caption.language == (p.caption_language or p.language)


def caption_payload(caption: Caption) -> dict[str, Any]:
    """``call:caption`` as a socket receives it (see ``docs/socket-protocol.md``)."""
    return {
        "callId": caption.call_id,
        "utteranceId": caption.utterance_id,
        "speakerParticipantId": caption.speaker_participant_id,
        "language": caption.language,
        "text": caption.text,
        "sourceLanguage": caption.source_language,
        "sourceText": caption.source_text,
        "isFinal": caption.is_final,
        "revision": caption.revision,
        "translated": caption.translated,
        "untranslatedReason": caption.untranslated_reason,
    }


class Revisions:
    """The newest revision delivered per (call, utterance, language), bounded (LRU).

    At one revision a translated caption is newer than an untranslated one: a duplicate
    segment (delivery is at least once) may be translated the second time where the first
    timed out, and the translation must then replace the original text, never the reverse.
    """

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._newest: OrderedDict[tuple[str, str, str], tuple[int, bool]] = OrderedDict()

    def claim(self, caption: Caption) -> bool:
        """Whether ``caption`` is newer than what went out for its utterance and language
        (a duplicate or an older revision is not); records it if so."""
        key = (caption.call_id, caption.utterance_id, caption.language)
        rank = (caption.revision, caption.translated)
        newest = self._newest.get(key)
        if newest is not None and rank <= newest:
            return False
        self._newest[key] = rank
        self._newest.move_to_end(key)
        while len(self._newest) > self._size:
            self._newest.popitem(last=False)
        return True

    def forget_call(self, call_id: str) -> None:
        for key in [k for k in self._newest if k[0] == call_id]:
            del self._newest[key]
