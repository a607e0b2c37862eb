"""How the media node's tap cuts utterances for live captions (UtteranceCutter)."""

import numpy as np

from media_node.settings import MediaNodeSettings
from media_node.tap import SAMPLE_RATE, WINDOW, Utterance, UtteranceCutter

LOUD = np.full(WINDOW, 8000, dtype=np.int16)
QUIET = np.zeros(WINDOW, dtype=np.int16)


def feed(cutter: UtteranceCutter, pattern: list[float]) -> list[tuple[int, Utterance]]:
    """(window index, chunk) for every chunk the pattern of probabilities produces."""
    out = []
    for i, p in enumerate(pattern):
        out += [(i, u) for u in cutter.push(LOUD if p else QUIET, p)]
    return out


def windows(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE / WINDOW)


def test_the_first_pause_sends_the_utterance_as_final_without_waiting_for_its_end() -> None:
    cutter = UtteranceCutter(pause_s=0.25, min_silence_s=0.6)
    speech = windows(1.0)
    got = feed(cutter, [0.0] * 10 + [1.0] * speech + [0.0] * windows(1.0))
    assert len(got) == 1
    index, chunk = got[0]
    assert chunk.is_final and chunk.sequence == 0
    # Sent after about pause_s of silence, not min_silence_s.
    assert (index - 10 - speech + 1) * WINDOW / SAMPLE_RATE <= 0.25 + WINDOW / SAMPLE_RATE
    # The speech ended where the loud windows did; the chunk keeps only a short tail.
    assert chunk.speech_end_sample == (10 + speech) * WINDOW
    assert chunk.start_sample + len(chunk.pcm) - chunk.speech_end_sample <= 0.1 * SAMPLE_RATE


def test_speech_resuming_within_the_silence_continues_and_replaces_the_final() -> None:
    cutter = UtteranceCutter(pause_s=0.25, min_silence_s=0.6, max_chunk_s=5.0)
    pattern = [1.0] * windows(0.8) + [0.0] * windows(0.4) + [1.0] * windows(0.8)
    got = [u for _, u in feed(cutter, pattern + [0.0] * windows(1.0))]
    assert [(u.sequence, u.is_final) for u in got] == [(0, True), (1, True)]
    assert got[0].utterance_id == got[1].utterance_id
    # Each chunk holds the utterance from its start: the continuation holds both parts.
    assert got[1].start_sample == got[0].start_sample
    assert len(got[1].pcm) > len(got[0].pcm) + 0.8 * SAMPLE_RATE


def test_a_new_utterance_begins_after_the_full_silence() -> None:
    cutter = UtteranceCutter(pause_s=0.25, min_silence_s=0.6)
    pattern = [1.0] * windows(0.8) + [0.0] * windows(0.8) + [1.0] * windows(0.8)
    got = [u for _, u in feed(cutter, pattern + [0.0] * windows(1.0))]
    assert len(got) == 2 and got[0].utterance_id != got[1].utterance_id
    assert all(u.is_final and u.sequence == 0 for u in got)


def test_long_speech_sends_cumulative_interim_chunks_every_interval() -> None:
    cutter = UtteranceCutter(max_chunk_s=1.0)
    got = [u for _, u in feed(cutter, [1.0] * windows(3.5))]
    got += cutter.flush()
    assert [u.is_final for u in got] == [False, False, False, True]
    assert [u.sequence for u in got] == [0, 1, 2, 3]
    lengths = [len(u.pcm) for u in got]
    assert lengths == sorted(lengths) and lengths[0] >= 1.0 * SAMPLE_RATE
    assert {u.start_sample for u in got} == {0}


def test_an_utterance_past_the_longest_is_cut_and_a_new_one_begins() -> None:
    cutter = UtteranceCutter(max_chunk_s=100.0, max_utterance_s=2.0)
    got = [u for _, u in feed(cutter, [1.0] * windows(3.0) + [0.0] * windows(1.0))]
    assert [u.is_final for u in got] == [True, True]
    assert got[0].utterance_id != got[1].utterance_id
    assert len(got[0].pcm) <= 2.0 * SAMPLE_RATE + WINDOW


def test_blips_are_dropped_and_flush_sends_nothing_twice() -> None:
    cutter = UtteranceCutter()
    assert feed(cutter, [1.0, 1.0] + [0.0] * windows(1.0)) == []
    done = UtteranceCutter()
    feed(done, [1.0] * windows(1.0) + [0.0] * windows(0.3))
    assert done.flush() == []  # its final already went out at the pause


def test_settings_configure_the_cutter() -> None:
    settings = MediaNodeSettings.from_env(
        {
            "MEDIA_NODE_UTTERANCE_PAUSE_S": "0.3",
            "MEDIA_NODE_UTTERANCE_MIN_SILENCE_S": "0.8",
            "MEDIA_NODE_UTTERANCE_INTERIM_S": "1.5",
            "MEDIA_NODE_UTTERANCE_MAX_S": "12",
        }
    )
    cutter = UtteranceCutter.factory(settings)()
    assert (cutter.pause_s, cutter.min_silence_s) == (0.3, 0.8)
    assert (cutter.max_chunk_s, cutter.max_utterance_s) == (1.5, 12.0)
