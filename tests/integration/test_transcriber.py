"""Speech to captions with real parts: espeak-ng speech cut by the media node's own
utterance cutter and Silero VAD, real faster-whisper models in transcriber processes, the
translator bridge process, Apertium APy, NATS with the ``AUDIO_CHUNKS`` work queue.

The module has a NATS server of its own: the work queue allows one shared consumer, and
other modules' media-node tests publish audio chunks that are not for these workers.
"""

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_state import CallState
from schemas.captions import Caption, TranscriptSegment
from schemas.codec import encode
from schemas.dead_letter import DeadLetter
from schemas.kv import TypedKv
from schemas.media import AudioChunk
from schemas.settings import BusSettings
from tests.support.captions import ApyServer, ServiceProcess, call_state, speech_chunks
from tests.support.nats_server import NatsServer, provision_everything
from tests.support.processes import HeartbeatWatch
from tests.support.speech import SENTENCES, silence, speak, word_error_rate
from tests.support.waiting import Collector, eventually

EN = SENTENCES["en"][0]  # "Good morning everyone, thank you for joining the call."
FR = SENTENCES["fr"][0]  # "Bonjour à tous, merci d'être venus."


@pytest.fixture(scope="module")
def nats_here() -> Iterator[NatsServer]:
    server = NatsServer(name="captions").start()
    provision_everything(server.url)
    yield server
    server.cleanup()


@pytest.fixture
def bus_settings(nats_here: NatsServer) -> BusSettings:
    return BusSettings(nats_url=nats_here.url, nats_connect_deadline_s=5)


def transcriber_env(nats: NatsServer, service_id: str, **extra: str) -> dict[str, str]:
    return {
        "NATS_URL": nats.url,
        "SERVICE_ID": service_id,
        "HEARTBEAT_INTERVAL_S": "0.2",
        "TRANSCRIBER_ACK_WAIT_S": "2",
        "WHISPER_CPU_THREADS": "2",
        **extra,
    }


@pytest.fixture(scope="module")
def transcriber(nats_here: NatsServer) -> Iterator[ServiceProcess]:
    """One transcriber with both bundled models (tiny.en for English, base otherwise)."""
    proc = ServiceProcess("transcriber", transcriber_env(nats_here, "transcriber-a")).start()
    yield proc
    assert proc.stop() == 0
    assert not any("Traceback" in line for line in proc.lines)


async def _provision(url: str) -> None:
    from schemas.provisioning import provision

    settings = BusSettings(nats_url=url, nats_connect_deadline_s=5)
    bus = await Bus.connect(settings, "test-provision")
    try:
        await provision(bus.js, settings)
    finally:
        await bus.close()


@pytest.fixture(scope="module")
def bridge(nats_here: NatsServer, apertium: ApyServer) -> Iterator[ServiceProcess]:
    # The bridge waits for the gateway's ``calls`` bucket; module fixtures start before
    # the per-test ``bus`` that provisions it, so provision this module's server first.
    asyncio.run(_provision(nats_here.url))
    proc = ServiceProcess(
        "translator_bridge",
        {
            "NATS_URL": nats_here.url,
            "SERVICE_ID": "bridge-a",
            "HEARTBEAT_INTERVAL_S": "0.2",
            "TRANSLATOR_URL": apertium.url,
        },
    ).start()
    yield proc
    assert proc.stop() == 0


async def publish_chunks(bus: Bus, chunks: list[AudioChunk]) -> None:
    for chunk in chunks:
        await bus.publish(subjects.audio_chunk(chunk.call_id, chunk.participant_id), chunk)
    await bus.flush()


async def open_call(bus: Bus, call_id: str, readers: dict[str, tuple[str, str | None]]) -> None:
    kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    await kv.create(call_id, call_state(call_id, readers))


def finals(captions: list[Caption], revision: int) -> dict[str, Caption]:
    """The final caption of the last chunk (``revision``) per language: a pause inside the
    sentence (a comma) may have sent an earlier final that this one replaced."""
    return {c.language: c for c in captions if c.is_final and c.revision == revision}


async def test_english_speaker_spanish_and_french_readers_get_apertiums_translation(
    bus: Bus,
    transcriber: ServiceProcess,
    bridge: ServiceProcess,
    apertium: ApyServer,
    uid: str,
) -> None:
    call_id = f"c-{uid}"
    await open_call(
        bus, call_id, {"alice": ("en", None), "bruno": ("es", None), "chloe": ("fr", None)}
    )
    captions: Collector[Caption] = Collector()
    segments: Collector[TranscriptSegment] = Collector()
    await bus.subscribe(subjects.captions_of(call_id), Caption, captions)
    await bus.subscribe(subjects.transcript_segment(call_id), TranscriptSegment, segments)
    await bus.flush()

    chunks = speech_chunks(speak(EN, "en"), call_id=call_id, participant_id="alice", language="en")
    assert chunks and chunks[-1].is_final and len({c.utterance_id for c in chunks}) == 1
    await publish_chunks(bus, chunks)

    last = chunks[-1].sequence
    await captions.wait(lambda cs: set(finals(cs, last)) == {"en", "es", "fr"}, 60)
    final = finals(captions.items, last)
    heard = final["en"].text
    assert word_error_rate(EN, heard) <= 0.35, heard
    assert not final["en"].translated and final["en"].source_text == heard
    assert final["es"].translated and final["es"].text == apertium.translate(heard, ["eng", "spa"])
    assert final["fr"].text == apertium.translate(heard, ["eng", "spa", "fra"])
    assert {c.language for c in captions.items} == {"en", "es", "fr"}

    segment = next(s for s in segments.items if s.is_final and s.revision == last)
    assert segment.model == "tiny.en" and segment.participant_id == "alice"
    assert segment.language == "en" and segment.source == "server"
    assert segment.confidence is not None and 0 < segment.confidence <= 1
    assert segment.timings.transcription_ms > 0 and segment.end_s > segment.start_s


async def test_french_speaker_is_transcribed_by_the_multilingual_model(
    bus: Bus,
    transcriber: ServiceProcess,
    bridge: ServiceProcess,
    apertium: ApyServer,
    uid: str,
) -> None:
    call_id = f"c-{uid}"
    await open_call(bus, call_id, {"chloe": ("fr", None), "alice": ("en", None)})
    captions: Collector[Caption] = Collector()
    segments: Collector[TranscriptSegment] = Collector()
    await bus.subscribe(subjects.captions_of(call_id), Caption, captions)
    await bus.subscribe(subjects.transcript_segment(call_id), TranscriptSegment, segments)
    await bus.flush()
    chunks = speech_chunks(speak(FR, "fr"), call_id=call_id, participant_id="chloe", language="fr")
    await publish_chunks(bus, chunks)

    last = chunks[-1].sequence
    await captions.wait(lambda cs: set(finals(cs, last)) == {"fr", "en"}, 60)
    final = finals(captions.items, last)
    heard = final["fr"].text
    assert "bonjour" in heard.lower(), heard
    english = final["en"]
    assert english.translated and english.source_language == "fr"
    assert english.text == apertium.translate(heard, ["fra", "spa", "eng"])
    assert next(s for s in segments.items if s.is_final).model == "base"


async def test_a_long_utterance_gets_interim_captions_the_final_replaces(
    bus: Bus, transcriber: ServiceProcess, bridge: ServiceProcess, uid: str
) -> None:
    call_id = f"c-{uid}"
    await open_call(bus, call_id, {"alice": ("en", None), "bruno": ("es", None)})
    captions: Collector[Caption] = Collector()
    await bus.subscribe(subjects.caption(call_id, "es"), Caption, captions)
    await bus.flush()
    # Two sentences with a breath between them shorter than a pause: one ~5 s utterance.
    speech = np.concatenate([speak(SENTENCES["en"][3], "en"), silence(0.1), speak(EN, "en")])
    chunks = speech_chunks(speech, call_id=call_id, participant_id="alice", language="en")
    assert len({c.utterance_id for c in chunks}) == 1
    assert [c.is_final for c in chunks][:3] == [False, False, False] and chunks[-1].is_final
    await publish_chunks(bus, chunks)

    await captions.wait(lambda cs: any(c.revision == chunks[-1].sequence for c in cs), 60)
    revisions = [c.revision for c in captions.items]
    assert revisions == sorted(revisions)  # a listener never sees text go backwards
    partials = [c for c in captions.items if not c.is_final]
    assert partials, "no interim caption for a 5 s utterance"
    final = captions.items[-1]
    assert final.is_final and final.revision == chunks[-1].sequence
    assert len(final.source_text) > len(partials[0].source_text)


async def test_bad_chunks_are_dead_lettered_and_the_worker_carries_on(
    bus: Bus, transcriber: ServiceProcess, uid: str
) -> None:
    call_id = f"c-{uid}"
    letters: Collector[DeadLetter] = Collector()
    segments: Collector[TranscriptSegment] = Collector()
    await bus.subscribe(
        subjects.dead_letter(subjects.audio_chunks_of(call_id)), DeadLetter, letters
    )
    await bus.subscribe(subjects.transcript_segment(call_id), TranscriptSegment, segments)
    await bus.flush()
    good = speech_chunks(
        speak(SENTENCES["en"][1], "en"), call_id=call_id, participant_id="p", language="en"
    )[-1]
    subject = subjects.audio_chunk(call_id, "p")
    await bus.nc.publish(subject, b"\x00not json")
    await bus.publish(subject, msgspec_replace(good, sample_rate=8000, utterance_id="u-rate"))
    await bus.publish(subject, msgspec_replace(good, pcm=b"\x01\x02\x03", utterance_id="u-odd"))
    await bus.publish(subject, msgspec_replace(good, language="zz", utterance_id="u-lang"))
    await bus.publish(subject, good)
    await bus.flush()

    await letters.wait_count(4, 30)
    reasons = sorted(letter.reason.split(":")[0] for letter in letters.items)
    assert reasons == ["bad_audio", "bad_audio", "undecodable", "unsupported_language"]
    assert all(letter.expected_type == "AudioChunk" for letter in letters.items)
    await segments.wait(lambda s: any(x.utterance_id == good.utterance_id for x in s), 30)
    assert {s.utterance_id for s in segments.items} == {good.utterance_id}


def msgspec_replace(chunk: AudioChunk, **changes: object) -> AudioChunk:
    import msgspec

    return msgspec.structs.replace(chunk, **changes)


async def test_killing_one_of_two_workers_mid_batch_loses_no_utterance(
    bus: Bus, nats_here: NatsServer, transcriber: ServiceProcess, uid: str
) -> None:
    call_id = f"c-{uid}"
    segments: Collector[TranscriptSegment] = Collector()
    await bus.subscribe(subjects.transcript_segment(call_id), TranscriptSegment, segments)
    watch = await HeartbeatWatch.start(bus, "transcriber", f"transcriber-b-{uid}")
    # A slow second worker (English only, the full 30 s window), so it is still busy
    # with the chunks it took when it is killed.
    slow = ServiceProcess(
        "transcriber",
        transcriber_env(
            nats_here,
            f"transcriber-b-{uid}",
            TRANSCRIBER_MODELS="en=tiny.en",
            WHISPER_WINDOW="full",
            WHISPER_CPU_THREADS="1",
        ),
    ).start()
    utterances = []
    for i, text in enumerate(SENTENCES["en"][4:16]):
        chunk = speech_chunks(
            speak(text, "en"), call_id=call_id, participant_id=f"p{i % 3}", language="en"
        )[-1]
        utterances.append(chunk.utterance_id)
        await bus.nc.publish(subjects.audio_chunk(call_id, chunk.participant_id), encode(chunk))
    await bus.flush()
    try:
        await watch.wait(lambda beats: any(b.load.extra.get("in_hand", 0) > 0 for b in beats), 30)
    finally:
        slow.kill()  # SIGKILL: no drain, its chunks are never acknowledged

    def all_final() -> bool:
        done = {s.utterance_id for s in segments.items if s.is_final}
        return done >= set(utterances)

    await eventually(all_final, 60, step=0.1)
    # The survivor got at least one chunk a second time (the dead worker's).
    assert transcriber.logged("worker.redelivered"), "nothing was redelivered"
