"""Who each session sees and hears: last-N video with pins, loudest speakers for audio.

Pure and deterministic (time passed in), so every rule is unit-tested on its own:

- :class:`SpeakerHistory`: the order of recent speakers (last-N). A participant whose level
  stays above ``speech_dbov`` for ``speak_after_s`` moves to the front; the list is what
  video slots follow after the pins.
- :func:`wanted_video`: for one receiver, pinned participants (in the client's order),
  then recent speakers, then whoever holds a slot now (stability), then join order; never
  the receiver itself; at most ``tiles``.
- :class:`AudioSelector`: the participants heard in audio slots: whoever spoke most
  recently, with hysteresis: a member is displaced only once it has been quiet for
  ``displace_after_s`` and someone else spoke since.
- :func:`place`: keep every selected participant in the slot it already has; newcomers
  take the freed slots, lowest index first (a switch touches as few slots as possible).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    """A participant others may receive."""

    participant_id: str
    joined: int
    video: bool
    audio: bool


class SpeakerHistory:
    """Most recent speakers first (see the module docstring)."""

    def __init__(self, *, speech_dbov: float = -50.0, speak_after_s: float = 0.1) -> None:
        self.speech_dbov = speech_dbov
        self.speak_after_s = speak_after_s
        self.order: list[str] = []
        self._speaking_since: dict[str, float] = {}

    def update(self, levels: Mapping[str, float], now: float) -> bool:
        """Feed the current smoothed levels; True when the order changed."""
        speaking: list[tuple[float, str]] = []
        for pid, level in levels.items():
            if level <= self.speech_dbov:
                self._speaking_since.pop(pid, None)
                continue
            since = self._speaking_since.setdefault(pid, now)
            if now - since >= self.speak_after_s:
                speaking.append((level, pid))
        if not speaking:
            return False
        # The loudest of those speaking goes first; others speaking at the same time keep
        # their place (or come in right behind it), so two people talking at once do not
        # swap the front on every tick.
        speaking.sort(key=lambda x: (-x[0], x[1]))
        before = list(self.order)
        loudest = speaking[0][1]
        if loudest in self.order:
            self.order.remove(loudest)
        self.order.insert(0, loudest)
        at = 1
        for _, pid in speaking[1:]:
            if pid not in self.order:
                self.order.insert(at, pid)
                at += 1
        return self.order != before

    def remove(self, participant_id: str) -> None:
        self._speaking_since.pop(participant_id, None)
        if participant_id in self.order:
            self.order.remove(participant_id)


def wanted_video(
    receiver_id: str,
    candidates: Sequence[Candidate],
    *,
    pinned: Sequence[str],
    tiles: int,
    speakers: Sequence[str],
    holding: Iterable[str | None],
) -> list[str]:
    """The publishers whose video ``receiver_id`` should get, most wanted first."""
    if tiles <= 0:
        return []
    able = {c.participant_id for c in candidates if c.video and c.participant_id != receiver_id}
    out: list[str] = []
    seen: set[str] = set()

    def take(ids: Iterable[str | None]) -> bool:
        for pid in ids:
            if pid is not None and pid in able and pid not in seen:
                seen.add(pid)
                out.append(pid)
                if len(out) >= tiles:
                    return True
        return False

    joined = [c.participant_id for c in sorted(candidates, key=lambda c: c.joined)]
    for group in (pinned, speakers, holding, joined):
        if take(group):
            break
    return out


def place(current: Sequence[str | None], wanted: Sequence[str]) -> list[str | None]:
    """Slot contents for ``wanted`` that move as few participants as possible."""
    size = len(current)
    wanted_set = set(wanted[:size])
    out: list[str | None] = [pid if pid in wanted_set else None for pid in current]
    placed = {pid for pid in out if pid is not None}
    free = [i for i, pid in enumerate(out) if pid is None]
    for pid in wanted[:size]:
        if pid not in placed:
            out[free.pop(0)] = pid
            placed.add(pid)
    return out


class AudioSelector:
    """Who is heard in audio slots (see the module docstring)."""

    def __init__(
        self,
        *,
        speech_dbov: float = -50.0,
        displace_after_s: float = 0.3,
    ) -> None:
        self.speech_dbov = speech_dbov
        self.displace_after_s = displace_after_s
        self._last_spoke: dict[str, float] = {}

    def update(self, levels: Mapping[str, float], now: float) -> None:
        for pid, level in levels.items():
            if level > self.speech_dbov:
                self._last_spoke[pid] = now

    def remove(self, participant_id: str) -> None:
        self._last_spoke.pop(participant_id, None)

    def last_spoke(self, participant_id: str) -> float | None:
        return self._last_spoke.get(participant_id)

    def select(
        self,
        receiver_id: str,
        candidates: Sequence[Candidate],
        current: Sequence[str | None],
        now: float,
    ) -> list[str | None]:
        """The audio slot contents for one receiver (as :func:`place` lays them out)."""
        size = len(current)
        if size == 0:
            return []
        able = [c for c in candidates if c.audio and c.participant_id != receiver_id]
        able_ids = {c.participant_id for c in able}
        never = float("-inf")

        def rank(c: Candidate) -> tuple[float, int]:
            return (-self._last_spoke.get(c.participant_id, never), c.joined)

        ranked = [c.participant_id for c in sorted(able, key=rank)]
        keep = [pid for pid in current if pid is not None and pid in able_ids]
        others = [pid for pid in ranked if pid not in keep]
        for challenger in others:
            spoke = self._last_spoke.get(challenger)
            if len(keep) < size:
                keep.append(challenger)
                continue
            if spoke is None:
                break
            # Displace the member quiet for longest, if it is quiet long enough and the
            # challenger spoke after it.
            stale = min(keep, key=lambda pid: self._last_spoke.get(pid, never))
            stale_spoke = self._last_spoke.get(stale, never)
            if now - stale_spoke >= self.displace_after_s and spoke > stale_spoke:
                keep.remove(stale)
                keep.append(challenger)
            else:
                break
        return place(current, keep)
