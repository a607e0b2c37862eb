"""From audio chunks to transcription jobs, and from results to transcript segments (pure).

Each chunk the media node sends holds its utterance's audio *from the start* (see
``media_node.tap.UtteranceCutter``), so any worker can transcribe any chunk on its own and
a newer chunk of an utterance makes every older one pointless: :func:`coalesce` keeps only
the newest chunk of each utterance in a batch.
"""

import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from schemas.captions import SegmentTimings, TranscriptSegment
from schemas.ids import LANG_PATTERN
from schemas.media import AudioChunk
from transcriber.engine import (
    SAMPLE_RATE,
    BadAudio,
    SttRequest,
    SttResult,
    pcm16_to_float,
)

_LANG_RE = re.compile(LANG_PATTERN)
M = TypeVar("M")


class BadChunk(BadAudio):
    """An audio chunk that cannot be transcribed as sent (the reason is safe to log)."""


@dataclass(frozen=True, slots=True)
class Job(Generic[M]):
    """One chunk to transcribe, with the bus message to acknowledge when done."""

    chunk: AudioChunk
    request: SttRequest
    message: M
    #: When the chunk entered the stream (the media node sent it).
    queued_at: datetime

    @property
    def utterance_key(self) -> tuple[str, str, str]:
        c = self.chunk
        return (c.call_id, c.participant_id, c.utterance_id)


def to_request(chunk: AudioChunk) -> SttRequest:
    """The engine request of a chunk; :class:`BadChunk` when it cannot be one."""
    if chunk.sample_rate != SAMPLE_RATE:
        raise BadChunk(f"sample_rate must be {SAMPLE_RATE} (16 kHz mono s16le PCM)")
    if not _LANG_RE.fullmatch(chunk.language):
        raise BadChunk(f"language must match {LANG_PATTERN}")
    if chunk.sequence < 0 or chunk.end_s < chunk.start_s:
        raise BadChunk("sequence must be >= 0 and end_s >= start_s")
    if not chunk.pcm:
        raise BadChunk("empty pcm")
    try:
        audio = pcm16_to_float(chunk.pcm)
    except BadAudio as exc:
        raise BadChunk(str(exc)) from None
    return SttRequest(audio=audio, language=chunk.language)


def coalesce(jobs: list[Job[M]]) -> tuple[list[Job[M]], list[Job[M]]]:
    """(newest chunk of each utterance, the older chunks it makes pointless)."""
    newest: dict[tuple[str, str, str], Job[M]] = {}
    for job in jobs:
        seen = newest.get(job.utterance_key)
        if seen is None or job.chunk.sequence > seen.chunk.sequence:
            newest[job.utterance_key] = job
    keep = list(newest.values())
    kept = {id(j) for j in keep}
    return keep, [j for j in jobs if id(j) not in kept]


class Progress:
    """The newest chunk sequence this worker transcribed per utterance (bounded LRU), so
    a late older chunk (another worker was slower, or a redelivery) is skipped."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._done: OrderedDict[tuple[str, str, str], int] = OrderedDict()

    def is_stale(self, job: Job[M]) -> bool:
        done = self._done.get(job.utterance_key)
        return done is not None and job.chunk.sequence < done

    def record(self, job: Job[M]) -> None:
        key = job.utterance_key
        self._done[key] = max(job.chunk.sequence, self._done.get(key, -1))
        self._done.move_to_end(key)
        while len(self._done) > self._size:
            self._done.popitem(last=False)


def speech_ended_at(chunk: AudioChunk) -> datetime:
    """Wall-clock end of the speech a chunk covers (its trailing silence excluded)."""
    end_s = chunk.speech_end_s if chunk.speech_end_s is not None else chunk.end_s
    return chunk.started_at + timedelta(seconds=max(end_s - chunk.start_s, 0.0))


def ms_between(start: datetime, end: datetime) -> float:
    return round(max((end - start).total_seconds(), 0.0) * 1000, 1)


def segment_for(
    job: Job[M], result: SttResult, *, started_at: datetime, transcription_ms: float
) -> TranscriptSegment:
    """The transcript segment of one transcribed chunk."""
    chunk = job.chunk
    ended = speech_ended_at(chunk)
    return TranscriptSegment(
        call_id=chunk.call_id,
        utterance_id=chunk.utterance_id,
        participant_id=chunk.participant_id,
        language=chunk.language,
        text=result.text[:2000],
        is_final=chunk.is_final,
        revision=chunk.sequence,
        start_s=chunk.start_s,
        end_s=chunk.speech_end_s if chunk.speech_end_s is not None else chunk.end_s,
        confidence=result.confidence,
        source="server",
        speech_ended_at=ended,
        timings=SegmentTimings(
            vad_wait_ms=ms_between(ended, job.queued_at),
            queue_ms=ms_between(job.queued_at, started_at),
            transcription_ms=round(transcription_ms, 1),
        ),
        model=result.model,
    )


def worth_publishing(job: Job[M], result: SttResult) -> bool:
    """Empty text is published only when it may replace an earlier caption (a chunk after
    the first of its utterance); a first chunk with no words was noise."""
    return bool(result.text) or job.chunk.sequence > 0
