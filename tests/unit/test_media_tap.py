import asyncio
import fractions
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
from aiortc.codecs.opus import OpusEncoder

from media_node.tap import WINDOW, AudioTap, EnergyVad, SileroVad, TapStats, UtteranceCutter
from schemas.media import AudioChunk
from tests.support.media_peer import speech_like


def windows(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i : i + WINDOW] for i in range(0, len(pcm) - WINDOW + 1, WINDOW)]


def test_cutter_emits_one_final_utterance_with_pre_roll() -> None:
    cutter = UtteranceCutter()
    out = []
    silence = np.zeros(WINDOW, dtype=np.int16)
    loud = np.full(WINDOW, 8000, dtype=np.int16)
    sequence = [0.0] * 20 + [1.0] * 30 + [0.0] * 30
    for p in sequence:
        out += cutter.push(loud if p else silence, p)
    assert len(out) == 1
    u = out[0]
    assert u.is_final and u.sequence == 0
    # Starts about pre_roll_s (0.2 s) before the speech did.
    assert 20 * WINDOW - u.start_sample <= 0.2 * 16000 + WINDOW
    assert len(u.pcm) >= 30 * WINDOW


def test_cutter_splits_long_speech_and_drops_blips() -> None:
    cutter = UtteranceCutter(max_chunk_s=1.0)
    loud = np.full(WINDOW, 8000, dtype=np.int16)
    out = []
    for _ in range(100):  # 3.2 s of speech
        out += cutter.push(loud, 1.0)
    out += cutter.flush()
    assert [u.sequence for u in out] == list(range(len(out))) and len(out) >= 3
    assert [u.is_final for u in out] == [False] * (len(out) - 1) + [True]
    assert len({u.utterance_id for u in out}) == 1

    blip = UtteranceCutter()
    res = []
    for p in [1.0, 1.0] + [0.0] * 30:  # 64 ms of "speech"
        res += blip.push(loud if p else np.zeros(WINDOW, dtype=np.int16), p)
    assert res == []


def test_vads_tell_speech_from_silence() -> None:
    speech = speech_like(1.0, rate=16000)
    silence = np.zeros(16000, dtype=np.int16)
    energy = EnergyVad()
    assert max(energy(w) for w in windows(speech)) == 1.0
    assert max(energy(w) for w in windows(silence)) == 0.0
    silero = SileroVad()
    assert max(silero(w) for w in windows(speech)) > 0.5
    silero = SileroVad()
    assert max(silero(w) for w in windows(silence)) < 0.2


def opus_packets(pcm48: np.ndarray) -> list[bytes]:
    encoder = OpusEncoder()
    out: list[bytes] = []
    for i in range(0, len(pcm48) - 960 + 1, 960):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(pcm48[i : i + 960].tobytes())
        frame.pts = i
        frame.sample_rate = 48000
        frame.time_base = fractions.Fraction(1, 48000)
        payloads, _ = encoder.encode(frame)
        out += payloads
    return out


async def test_tap_decodes_opus_and_publishes_chunks_off_the_event_loop() -> None:
    pcm = np.concatenate(
        [np.zeros(24000, dtype=np.int16), speech_like(1.0), np.zeros(48000, dtype=np.int16)]
    )
    chunks: list[AudioChunk] = []
    levels: list[float] = []
    done = asyncio.Event()

    async def publish(chunk: AudioChunk) -> None:
        chunks.append(chunk)
        if chunk.is_final:
            done.set()

    stats = TapStats()
    with ThreadPoolExecutor(1) as pool:
        tap = AudioTap(
            call_id="c1",
            participant_id="p1",
            language="en",
            vad="silero",
            executor=pool,
            publish=publish,
            stats=stats,
            on_level=levels.append,
        )
        tap.start()
        for payload in opus_packets(pcm):
            tap.feed(payload)
            await asyncio.sleep(0)
        await asyncio.wait_for(done.wait(), 10)
        await tap.stop()
    final = next(c for c in chunks if c.is_final)
    assert final.call_id == "c1" and final.sample_rate == 16000 and final.vad == "silero"
    assert 0.3 < final.start_s < 0.8 and final.end_s - final.start_s > 0.4
    assert len(final.pcm) == round((final.end_s - final.start_s) * 16000) * 2
    assert max(levels) > -30 and stats.packets_dropped == 0


async def test_a_full_tap_queue_drops_and_counts() -> None:
    async def publish(chunk: AudioChunk) -> None:
        pass

    stats = TapStats()
    with ThreadPoolExecutor(1) as pool:
        tap = AudioTap(
            call_id="c1",
            participant_id="p1",
            language="en",
            vad="energy",
            executor=pool,
            publish=publish,
            stats=stats,
            queue_size=10,
        )
        # Not started: nothing drains the queue.
        for _ in range(25):
            tap.feed(b"\xf8\xff\xfe")
        assert tap.dropped == 15 and stats.packets_dropped == 15 and stats.packets_in == 25


async def test_stop_with_a_full_queue_ends_promptly_and_flushes() -> None:
    """The end marker used to be lost on a full queue: stop() then waited out its 2 s
    timeout and cancelled the tap, losing the utterance in progress."""
    chunks: list[AudioChunk] = []

    async def publish(chunk: AudioChunk) -> None:
        chunks.append(chunk)

    stats = TapStats()
    packets = opus_packets(speech_like(1.0))
    with ThreadPoolExecutor(1) as pool:
        tap = AudioTap(
            call_id="c1",
            participant_id="p1",
            language="en",
            vad="energy",
            executor=pool,
            publish=publish,
            stats=stats,
            queue_size=len(packets),
        )
        for payload in packets:
            tap.feed(payload)  # the queue is now full: the tap fell behind
        tap.start()
        started = asyncio.get_running_loop().time()
        await tap.stop()
        assert asyncio.get_running_loop().time() - started < 1.5
    assert chunks and chunks[-1].is_final  # the speech in hand was flushed, not dropped
    assert stats.packets_dropped == 1  # one packet made room for the end marker
