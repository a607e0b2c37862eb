import numpy as np

from media_node.speaker import SILENCE_DBOV, ActiveSpeakerDetector, level_dbov


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(
    det: ActiveSpeakerDetector, clock: FakeClock, levels: dict[str, float], s: float
) -> list[str | None]:
    """Feed 20 ms level samples for ``s`` seconds, evaluating every 100 ms."""
    changes: list[str | None] = []
    steps = round(s / 0.02)
    for step in range(steps):
        clock.now += 0.02
        for pid, lvl in levels.items():
            det.update(pid, lvl)
        if step % 5 == 4:
            change = det.evaluate()
            if change is not None:
                changes.append(change.participant_id)
    return changes


def test_first_speaker_is_chosen_at_once_and_kept_through_silence() -> None:
    clock = FakeClock()
    det = ActiveSpeakerDetector(clock=clock)
    assert feed(det, clock, {"a": -20, "b": -90}, 0.2) == ["a"]
    # Everybody silent: the last speaker stays.
    assert feed(det, clock, {"a": -100, "b": -100}, 2.0) == []
    assert det.current == "a"


def test_hysteresis_ignores_short_or_small_bursts() -> None:
    clock = FakeClock()
    det = ActiveSpeakerDetector(clock=clock)
    feed(det, clock, {"a": -20, "b": -90}, 0.5)
    # b slightly louder than a: within the margin, no switch.
    assert feed(det, clock, {"a": -22, "b": -19}, 2.0) == []
    # A short loud cough from b (0.1 s): no switch.
    assert feed(det, clock, {"a": -22, "b": -5}, 0.1) == []
    assert feed(det, clock, {"a": -22, "b": -40}, 0.5) == []
    # b clearly dominant for longer: switch once.
    assert feed(det, clock, {"a": -60, "b": -15}, 1.5) == ["b"]


def test_a_participant_without_packets_counts_as_silent_and_leaving_clears() -> None:
    clock = FakeClock()
    det = ActiveSpeakerDetector(clock=clock)
    feed(det, clock, {"a": -20}, 0.3)
    clock.now += 1.0  # no packets from a (muted)
    assert det.level("a") == SILENCE_DBOV
    change = det.remove("a")
    assert change is not None and change.participant_id is None
    assert change.previous_participant_id == "a"


def test_level_dbov() -> None:
    assert level_dbov(np.zeros(512, dtype=np.int16)) == SILENCE_DBOV
    full = np.full(512, 32767, dtype=np.int16)
    assert abs(level_dbov(full)) < 0.1
    half = (full // 2).astype(np.int16)
    assert abs(level_dbov(half) + 6.02) < 0.1
