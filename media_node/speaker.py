"""Active speaker detection with hysteresis, from per-participant audio levels.

Levels are in dBov (0 = loudest, -127 = silence), from the RTP ``ssrc-audio-level`` header
extension (RFC 6464) when the publisher sends it, otherwise from the decoded audio tap.
The detector keeps the last speaker through silence (what a "speaker view" wants); it
switches only when someone else has been clearly louder for a while.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SILENCE_DBOV = -127.0


def level_dbov(samples: "np.ndarray[tuple[int, ...], np.dtype[np.int16]]") -> float:
    """RMS level of 16-bit PCM in dBov (as RFC 6464 defines it)."""
    if samples.size == 0:
        return SILENCE_DBOV
    rms = math.sqrt(float(np.mean(np.square(samples.astype(np.float64))))) / 32768.0
    if rms <= 0:
        return SILENCE_DBOV
    return max(SILENCE_DBOV, 20.0 * math.log10(rms))


@dataclass(slots=True)
class _Level:
    smoothed: float = SILENCE_DBOV
    updated: float = 0.0


@dataclass(frozen=True, slots=True)
class SpeakerChange:
    participant_id: str | None
    previous_participant_id: str | None
    level_dbov: float


class ActiveSpeakerDetector:
    """Decides the dominant speaker of one call.

    - each participant's level is smoothed (attack fast, release slowly);
    - a participant counts as speaking above ``speech_dbov``;
    - a challenger replaces the current speaker after being louder by ``margin_db`` (or the
      current one falling silent) for ``switch_after_s`` in a row.
    """

    def __init__(
        self,
        *,
        speech_dbov: float = -50.0,
        margin_db: float = 6.0,
        switch_after_s: float = 0.3,
        stale_after_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.speech_dbov = speech_dbov
        self.margin_db = margin_db
        self.switch_after_s = switch_after_s
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._levels: dict[str, _Level] = {}
        self.current: str | None = None
        self._challenger: str | None = None
        self._challenger_since = 0.0

    def update(self, participant_id: str, dbov: float) -> None:
        """One level sample (one audio packet) of one participant."""
        now = self._clock()
        entry = self._levels.setdefault(participant_id, _Level(updated=now))
        alpha = 0.5 if dbov > entry.smoothed else 0.1
        entry.smoothed += alpha * (dbov - entry.smoothed)
        entry.updated = now

    def remove(self, participant_id: str) -> SpeakerChange | None:
        """The participant left; if they were the speaker, the speaker is now nobody."""
        self._levels.pop(participant_id, None)
        if self._challenger == participant_id:
            self._challenger = None
        if self.current == participant_id:
            self.current = None
            return SpeakerChange(None, participant_id, SILENCE_DBOV)
        return None

    def level(self, participant_id: str) -> float:
        entry = self._levels.get(participant_id)
        if entry is None or self._clock() - entry.updated > self.stale_after_s:
            return SILENCE_DBOV  # no packets (muted, DTX): silent
        return entry.smoothed

    def evaluate(self) -> SpeakerChange | None:
        """Call periodically; returns a change when the dominant speaker switches."""
        now = self._clock()
        loudest: str | None = None
        loudest_level = self.speech_dbov
        for pid in self._levels:
            lvl = self.level(pid)
            if lvl > loudest_level:
                loudest, loudest_level = pid, lvl
        if loudest is None or loudest == self.current:
            self._challenger = None
            return None
        current_level = self.level(self.current) if self.current else SILENCE_DBOV
        clearly_louder = (
            current_level < self.speech_dbov or loudest_level >= current_level + self.margin_db
        )
        if not clearly_louder:
            self._challenger = None
            return None
        if self._challenger != loudest:
            self._challenger, self._challenger_since = loudest, now
        if self.current is not None and now - self._challenger_since < self.switch_after_s:
            return None
        previous, self.current, self._challenger = self.current, loudest, None
        return SpeakerChange(loudest, previous, round(loudest_level, 1))
