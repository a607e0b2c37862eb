"""Transcripts a browser sends in a P2P call, as :class:`TranscriptSegment` (pure).

In a peer-to-peer call no media node hears anyone, so a browser that can transcribe (the
Web Speech API) sends its own speech recognition: ``call:transcription {utteranceId,
text, isFinal, revision?, language?}``. The gateway publishes it on
``transcript.segment.<call>`` exactly like a transcriber's segment, with
``source="client"``, and the translator bridge takes it from there.

- The utterance id becomes ``<participantId>-<utteranceId>``: one participant can never
  overwrite (or, with a huge revision, silence) another's utterance.
- Revisions only grow per utterance: without one, the gateway numbers the client's
  results 0, 1, 2 ...; with one, a revision not above the last one published is stale and
  not published (a duplicate, or a result that arrived late).
- Times: ``end_s`` is seconds since the participant joined the call, at receipt;
  ``start_s`` when the gateway first heard of the utterance; ``speech_ended_at`` the
  receipt (a browser's recognizer reports no timing).
"""

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.call_state import CallParticipantState
from schemas.captions import TranscriptSegment

#: Utterances whose revisions are remembered (oldest forgotten first).
_REMEMBERED = 50_000

#: ``model`` of a client transcript (what produced it, for quality analysis).
CLIENT_MODEL = "browser"


@dataclass(slots=True)
class _Utterance:
    revision: int
    started_s: float


class ClientRevisions:
    """The last revision published per (call, participant, utterance), bounded (LRU)."""

    def __init__(self, size: int = _REMEMBERED) -> None:
        self._size = size
        self._last: OrderedDict[tuple[str, str, str], _Utterance] = OrderedDict()

    def next(
        self,
        call_id: str,
        participant_id: str,
        utterance_id: str,
        revision: int | None,
        at_s: float,
    ) -> tuple[int, float] | None:
        """The revision to publish and the utterance's start (seconds since joining), or
        ``None`` when ``revision`` is not above the last one published.

        Nothing is recorded: :meth:`published` does once the segment is out, so a
        transcript whose publish failed can be sent again with the same revision.
        """
        last = self._last.get((call_id, participant_id, utterance_id))
        if last is None:
            return (0 if revision is None else revision), at_s
        chosen = last.revision + 1 if revision is None else revision
        if chosen <= last.revision:
            return None
        return chosen, last.started_s

    def published(
        self,
        call_id: str,
        participant_id: str,
        utterance_id: str,
        revision: int,
        started_s: float,
    ) -> None:
        """Record a revision as published (what :meth:`next` compares with)."""
        key = (call_id, participant_id, utterance_id)
        last = self._last.get(key)
        if last is not None and last.revision >= revision:
            return  # a concurrent, newer one was published first
        self._last[key] = _Utterance(revision, started_s)
        self._last.move_to_end(key)
        while len(self._last) > self._size:
            self._last.popitem(last=False)


def scoped_utterance_id(participant_id: str, utterance_id: str) -> str:
    """The id of a client's utterance on the bus (see the module docstring)."""
    return f"{participant_id}-{utterance_id}"


def client_segment(
    *,
    call_id: str,
    speaker: CallParticipantState,
    utterance_id: str,
    text: str,
    is_final: bool,
    revision: int,
    language: str,
    started_s: float,
    now: float,
) -> TranscriptSegment:
    """A browser's transcript as a segment (see the module docstring)."""
    at = datetime.fromtimestamp(now, UTC)
    return TranscriptSegment(
        call_id=call_id,
        utterance_id=scoped_utterance_id(speaker.participant_id, utterance_id),
        participant_id=speaker.participant_id,
        language=language,
        text=text,
        is_final=is_final,
        revision=revision,
        start_s=round(started_s, 3),
        end_s=round(max(started_s, now - speaker.joined_at), 3),
        source="client",
        speech_ended_at=at,
        model=CLIENT_MODEL,
        produced_at=at,
    )
