"""What speech becomes: transcript segments, then captions in each listener's language.

An utterance (cut by the media node's voice activity detection, or by a browser's own
speech recognition in a P2P call) is transcribed into one or more
:class:`TranscriptSegment` on ``transcript.segment.<call_id>``: zero or more partial ones
while the person is still speaking, then a final one at the first pause. If the speaker
resumes within the end-of-utterance silence, a continuation follows (same
``utterance_id``, higher ``revision``: partials again, then a new final). The translator
bridge turns each segment into one :class:`Caption` per language somebody in the call
reads, on ``caption.<call_id>.<lang>``; the speaker's own language carries the original
text. Per ``utterance_id`` the highest ``revision`` wins: a caption replaces every earlier
one with a lower revision, and one arriving after a higher revision is stale (delivery is
at least once: a duplicate carries the same revision). Storing the last revision of each
utterance keeps the whole transcript.

Times: ``speech_ended_at`` is the wall-clock end of the speech the segment covers (the
start of every latency figure); the ``*_ms`` fields say where the time went.
"""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.ids import Id, Lang
from schemas.message import Message, utc_now

#: A caption's text; bounded so a hostile client transcript cannot flood every listener.
CaptionText = Annotated[str, msgspec.Meta(max_length=2000)]

TranscriptSource = Literal["server", "client"]
"""server: a transcriber (faster-whisper) on audio tapped by a media node; client: the
speaker's browser (Web Speech API) sent the text through the gateway."""

UntranslatedReason = Literal["same_language", "no_pair", "backend_failed", "timeout"]
"""Why a caption carries the original text: it is the speaker's own language, no
translation path exists between the two languages, or the translator failed or was late."""


class SegmentTimings(msgspec.Struct, frozen=True, kw_only=True):
    """Where an utterance's time went before it became text (milliseconds)."""

    #: From the end of speech to the chunk reaching the stream (silence detection).
    vad_wait_ms: float = 0.0
    #: From the chunk reaching the stream to a transcriber starting on it.
    queue_ms: float = 0.0
    #: Speech recognition itself.
    transcription_ms: float = 0.0


class TranscriptSegment(Message, frozen=True, kw_only=True, tag="transcript.segment"):
    """The source-language text of one utterance, partial (more to come) or final."""

    call_id: Id
    utterance_id: Id
    #: The speaker.
    participant_id: Id
    #: The language spoken (from the speaker's profile or join options, never guessed).
    language: Lang
    text: CaptionText
    is_final: bool
    #: Segments of one utterance count up from 0 (the audio chunk's ``sequence``); the
    #: highest revision received is the current text.
    revision: int = 0
    #: Seconds since the speaker's first audio on the media node (server) or call join.
    start_s: float = 0.0
    end_s: float = 0.0
    #: Mean token probability of the recognised text (0..1), when the engine gives one.
    confidence: float | None = None
    source: TranscriptSource = "server"
    speech_ended_at: datetime = msgspec.field(default_factory=utc_now)
    timings: SegmentTimings = msgspec.field(default_factory=SegmentTimings)
    #: Which model produced it (e.g. ``tiny.en``, ``base``), for quality analysis.
    model: str = ""
    produced_at: datetime = msgspec.field(default_factory=utc_now)


class Caption(Message, frozen=True, kw_only=True, tag="caption"):
    """One utterance in one listener language, on ``caption.<call_id>.<language>``."""

    call_id: Id
    utterance_id: Id
    speaker_participant_id: Id
    #: The language of ``text`` (the subject's last token).
    language: Lang
    text: CaptionText
    source_language: Lang
    source_text: CaptionText
    is_final: bool
    revision: int = 0
    #: ``False`` when ``text`` is the original (see ``untranslated_reason``).
    translated: bool = False
    untranslated_reason: UntranslatedReason | None = None
    speech_ended_at: datetime = msgspec.field(default_factory=utc_now)
    timings: SegmentTimings = msgspec.field(default_factory=SegmentTimings)
    translation_ms: float = 0.0
    produced_at: datetime = msgspec.field(default_factory=utc_now)
