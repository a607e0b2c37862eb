"""Spoken captions end to end, through real calls: people speak espeak-ng sentences into
their microphones and read each other in their own languages.

Real parts, as processes: two gateways, the mode selector, a media node (Silero VAD in its
tap), a transcriber with both bundled models (tiny.en, multilingual base), the translator
bridge, Apertium APy, nats-server; aiortc clients (:class:`CallClient`) whose microphone
plays WAV files, on P2P links, SFU uplinks and captions uplinks. The module has a NATS
server of its own: the transcribers' work queue takes one shared consumer, and other
modules' media nodes publish audio chunks that are not for these workers.
"""

import json
import time
from collections.abc import Callable, Iterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.captions import Caption, TranscriptSegment
from schemas.settings import BusSettings
from tests.support.call_client import CallClient, Payload
from tests.support.call_stack import CallStack
from tests.support.captions import ApyServer, ServiceProcess
from tests.support.microphone import Microphone
from tests.support.nats_server import NatsServer, provision_everything
from tests.support.speech import SENTENCES, speak, word_error_rate
from tests.support.waiting import Collector, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EN = SENTENCES["en"]
FR = SENTENCES["fr"]
#: How close the recognised words must be to the sentence (espeak-ng speech through Opus,
#: tiny.en): close enough to tell the sentence's final from the final of its first half.
WER_EN = 0.5


@pytest.fixture(scope="module")
def nats_here() -> Iterator[NatsServer]:
    server = NatsServer(name="captions-calls").start()
    provision_everything(server.url)
    yield server
    server.cleanup()


@pytest.fixture
def bus_settings(nats_here: NatsServer) -> BusSettings:
    return BusSettings(nats_url=nats_here.url, nats_connect_deadline_s=5)


@pytest.fixture(scope="module")
def stack(nats_here: NatsServer) -> Iterator[CallStack]:
    calls = CallStack(
        nats_here.url,
        gateways=2,
        selectors=1,
        media_nodes=1,
        media_env={"MEDIA_NODE_VAD": "silero"},
    ).start_all()
    yield calls
    broken = calls.tracebacks()
    logs = calls.logs()
    calls.stop()
    assert not broken, logs[-6000:]


@pytest.fixture(scope="module")
def transcriber(nats_here: NatsServer) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(
        "transcriber",
        {
            "NATS_URL": nats_here.url,
            "SERVICE_ID": "transcriber-calls",
            "HEARTBEAT_INTERVAL_S": "0.5",
            "WHISPER_CPU_THREADS": "2",
        },
    ).start()
    yield proc
    assert proc.stop() == 0
    assert not any("Traceback" in line for line in proc.lines)


@pytest.fixture(scope="module")
def bridge(nats_here: NatsServer, apertium: ApyServer) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(
        "translator_bridge",
        {
            "NATS_URL": nats_here.url,
            "SERVICE_ID": "bridge-calls",
            "HEARTBEAT_INTERVAL_S": "0.5",
            "TRANSLATOR_URL": apertium.url,
        },
    ).start()
    yield proc
    assert proc.stop() == 0
    assert not any("Traceback" in line for line in proc.lines)


async def person(
    stack: CallStack, uid: str, name: str, language: str, *, gateway: int, clients: list[CallClient]
) -> CallClient:
    client = await CallClient.connect(
        stack.urls[gateway],
        stack.token(f"{name}-{uid}", name, language),
        name=name,
        heartbeats=True,
        microphone=Microphone(),
    )
    clients.append(client)
    return client


def covers(sentence: str, language: str, bound: float) -> Callable[[Payload], bool]:
    """A final caption in ``language`` whose recognised text is ``sentence`` (within a
    word error rate of ``bound``): a pause inside the sentence may have sent an earlier
    final that a continuation replaced."""

    def match(c: Payload) -> bool:
        return (
            c["language"] == language
            and c["isFinal"]
            and word_error_rate(sentence, c["sourceText"]) <= bound
        )

    return match


def same(caption: Payload) -> Callable[[Payload], bool]:
    """The caption of the same utterance revision (in any language)."""
    return lambda c: (
        (c["utteranceId"], c["revision"], c["isFinal"])
        == (
            caption["utteranceId"],
            caption["revision"],
            True,
        )
    )


def transcribing(stack: CallStack, participant: str, enabled: bool) -> Callable[[], bool]:
    """A gateway told the media node to tap (or stop tapping) this participant."""

    def done() -> bool:
        for gw in stack.gateways:
            for line in gw.log_text().splitlines():
                if '"media.session_transcription"' not in line:
                    continue
                record = json.loads(line)
                if (record["participant_id"], record["enabled"]) == (participant, enabled):
                    return True
        return False

    return done


async def test_a_p2p_audio_uplink_is_transcribed_and_the_video_stays_direct(
    *,
    stack: CallStack,
    transcriber: ServiceProcess,
    bridge: ServiceProcess,
    apertium: ApyServer,
    uid: str,
    clients: list[CallClient],
) -> None:
    conv = f"uplink-{uid}"
    stack.put_conversation(conv, "DIRECT", [f"alice-{uid}", f"bruno-{uid}"])
    alice = await person(stack, uid, "alice", "en", gateway=0, clients=clients)
    bruno = await person(stack, uid, "bruno", "es", gateway=1, clients=clients)
    call_id = (await alice.initiate(conv))["call"]["callId"]
    await bruno.accept(call_id)
    t = time.monotonic()
    for x in (alice, bruno):
        await x.wait_everyone(t, "p2p")

    await bruno.set_transcription(True)
    await alice.wait_for("call:transcription-changed", lambda e: e["enabled"])
    # Alice's browser cannot transcribe: her microphone goes to a media node as well.
    ack = await alice.captions_uplink()
    assert ack["sfu"]["nodeId"] in {s.service_id for s in stack.of_kind("media_node")}
    assert (
        alice.captions_sfu is not None and alice.captions_sfu.session_id == ack["sfu"]["sessionId"]
    )
    # Her transcript is the server's now: her browser's own would be a duplicate.
    refused = await alice.request(
        "call:transcription",
        {"callId": call_id, "utteranceId": "u1", "text": "hello", "isFinal": True},
    )
    assert refused["ok"] is False and refused["error"]["code"] == "conflict"

    assert alice.microphone is not None
    await alice.microphone.say(speak(EN[1], "en"))
    es = await bruno.wait_caption(covers(EN[1], "es", WER_EN), 60)
    assert es["translated"] and es["speakerParticipantId"] == alice.participant_id
    assert es["text"] == apertium.translate(es["sourceText"], ["eng", "spa"])
    own = await alice.wait_caption(same(es))
    assert own["language"] == "en" and own["text"] == es["sourceText"]

    # The call never left P2P: the video still comes over the direct link.
    assert not alice.seen("call:mode-switch") and not bruno.seen("call:mode-switch")
    assert alice.mode == bruno.mode == "p2p"
    t = time.monotonic()
    await bruno.wait_everyone(t, "p2p")
    assert {c["language"] for c in bruno.captions()} == {"es"}
    assert {c["language"] for c in alice.captions()} == {"en"}

    # Giving the uplink up closes it.
    assert (await alice.drop_captions_uplink())["sfu"] is None
    assert alice.captions_sfu is None


async def test_an_sfu_call_gives_each_reader_their_language_and_follows_changes(
    *,
    stack: CallStack,
    transcriber: ServiceProcess,
    bridge: ServiceProcess,
    apertium: ApyServer,
    bus: Bus,
    uid: str,
    clients: list[CallClient],
) -> None:
    conv = f"sfu-{uid}"
    stack.put_conversation(conv, "GROUP", [f"{n}-{uid}" for n in ("alice", "bruno", "chloe", "x")])
    alice = await person(stack, uid, "alice", "en", gateway=0, clients=clients)
    bruno = await person(stack, uid, "bruno", "es", gateway=1, clients=clients)
    chloe = await person(stack, uid, "chloe", "fr", gateway=0, clients=clients)
    call_id = (await alice.initiate(conv))["call"]["callId"]
    published: Collector[Caption] = Collector()
    segments: Collector[TranscriptSegment] = Collector()
    await bus.subscribe(subjects.captions_of(call_id), Caption, published)
    await bus.subscribe(subjects.transcript_segment(call_id), TranscriptSegment, segments)
    await bus.flush()
    await bruno.join(call_id)
    await chloe.join(call_id)
    t = time.monotonic()
    for x in (alice, bruno, chloe):
        await x.wait_everyone(t, "sfu", timeout=60)
        await x.wait_mode("sfu")
    sessions = {x.name: x.sfu.session_id for x in (alice, bruno, chloe) if x.sfu is not None}
    assert len(sessions) == 3
    assert alice.microphone is not None and chloe.microphone is not None

    # Said while transcription is off: nobody transcribes it.
    unheard = EN[4]
    await alice.microphone.say(speak(unheard, "en"))

    # Turned on mid-call: the media node starts tapping the open sessions (no reopen).
    await chloe.set_transcription(True)
    for x in (alice, bruno, chloe):
        assert (await x.wait_for("call:transcription-changed"))["by"] == chloe.participant_id
    for x in (alice, bruno, chloe):
        await eventually(transcribing(stack, x.participant_id or "", True), 20)
    await alice.microphone.say(speak(EN[0], "en"))
    es = await bruno.wait_caption(covers(EN[0], "es", WER_EN), 60)
    fr = await chloe.wait_caption(same(es))
    own = await alice.wait_caption(same(es))
    heard = es["sourceText"]
    assert es["text"] == apertium.translate(heard, ["eng", "spa"])
    assert fr["language"] == "fr" and fr["text"] == apertium.translate(heard, ["eng", "spa", "fra"])
    assert own["language"] == "en" and own["text"] == heard and not own["translated"]
    first = es["utteranceId"]
    segment = next(s for s in segments.items if s.utterance_id == first and s.is_final)
    assert segment.model == "tiny.en" and segment.source == "server"
    assert segment.participant_id == alice.participant_id

    # A French speaker, transcribed by the multilingual model; Alice reads English.
    await published.wait(
        lambda cs: (
            {c.language for c in cs if c.utterance_id == first and c.is_final} >= {"en", "es", "fr"}
        ),
        20,
    )
    await chloe.microphone.say(speak(FR[2], "fr"))
    en = await alice.wait_caption(
        lambda c: c["language"] == "en" and c["sourceLanguage"] == "fr" and c["isFinal"], 60
    )
    assert en["speakerParticipantId"] == chloe.participant_id and en["sourceText"]
    assert en["text"] == apertium.translate(en["sourceText"], ["fra", "spa", "eng"])
    assert en["translated"]
    french = next(s for s in segments.items if s.utterance_id == en["utteranceId"])
    assert french.model == "base" and french.language == "fr"
    own_fr = await chloe.wait_caption(same(en))
    assert own_fr["language"] == "fr" and own_fr["text"] == en["sourceText"]

    # Bruno switches to French mid-call: the next sentence reaches him in French.
    assert (await bruno.set_language(caption_language="fr"))["captionLanguage"] == "fr"
    await alice.microphone.say(speak(EN[5], "en"))
    now_fr = await bruno.wait_caption(covers(EN[5], "fr", WER_EN), 60)
    assert now_fr["text"] == apertium.translate(now_fr["sourceText"], ["eng", "spa", "fra"])

    # Nobody got anything in a language they do not read (the first sentence's captions
    # were all published before Chloé spoke), and nobody had to reconnect any media.
    def languages(x: CallClient, utterance: str) -> set[str]:
        return {c["language"] for c in x.captions() if c["utteranceId"] == utterance}

    assert languages(alice, first) == {"en"}
    assert languages(bruno, first) == {"es"}
    assert languages(chloe, first) == {"fr"}
    assert {c["language"] for c in alice.captions()} == {"en"}
    assert {
        x.name: x.sfu.session_id for x in (alice, bruno, chloe) if x.sfu is not None
    } == sessions
    assert not [s for s in segments.items if word_error_rate(unheard, s.text) < 0.6]
