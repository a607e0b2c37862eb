"""The translator bridge with real parts: Apertium APy (Debian pairs), NATS, the KV state.

The LibreTranslate backend is tested against a small in-test HTTP server speaking that API
(the one stand-in of these tests: no LibreTranslate can run here).
"""

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from schemas import subjects
from schemas.bus import Bus
from schemas.call_state import CallState
from schemas.captions import Caption, TranscriptSegment
from schemas.kv import TypedKv
from tests.support.captions import ApyServer, ServiceProcess, call_state
from tests.support.nats_server import NatsServer, free_port
from tests.support.processes import HeartbeatWatch
from tests.support.waiting import Collector
from translator_bridge.adapters import CachingTranslator, GuardedTranslator
from translator_bridge.apertium import ApertiumTranslator
from translator_bridge.bridge import CaptionBridge
from translator_bridge.libretranslate import LibreTranslateTranslator
from translator_bridge.readers import CallReaders

SIX = ("en", "es", "fr", "ca", "pt", "it")
SENTENCE = "Good morning everyone, thank you for joining the call."


def segment(call_id: str, text: str = SENTENCE, **kw: object) -> TranscriptSegment:
    fields: dict[str, object] = {
        "call_id": call_id,
        "utterance_id": "u-1",
        "participant_id": "p-en",
        "language": "en",
        "text": text,
        "is_final": True,
        "revision": 0,
    }
    fields.update(kw)
    return TranscriptSegment(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def apertium_translator(apertium: ApyServer) -> AsyncIterator[ApertiumTranslator]:
    translator = ApertiumTranslator(apertium.url, timeout_s=10)
    await translator.start()
    yield translator
    await translator.close()


class Bridge:
    """A CaptionBridge whose captions are both kept (in order) and published."""

    def __init__(self, translator: object, states: dict[str, CallState]) -> None:
        self.captions: list[Caption] = []
        self.states = states

        async def lookup(call_id: str) -> CallState | None:
            return self.states.get(call_id)

        async def publish(caption: Caption) -> None:
            self.captions.append(caption)

        self.bridge = CaptionBridge(translator=translator, lookup=lookup, publish=publish)  # type: ignore[arg-type]

    def by_language(self) -> dict[str, Caption]:
        return {c.language: c for c in self.captions}


async def test_debian_pairs_connect_six_languages_both_ways(
    apertium_translator: ApertiumTranslator,
) -> None:
    pairs = apertium_translator.capabilities.pairs
    for a, b in [("eng", "spa"), ("eng", "cat"), ("fra", "spa"), ("fra", "cat")]:
        assert (a, b) in pairs and (b, a) in pairs
    for a, b in [("spa", "cat"), ("spa", "por"), ("spa", "ita")]:
        assert (a, b) in pairs and (b, a) in pairs
    for source, target in itertools.permutations(SIX, 2):
        route = apertium_translator.route(source, target)
        assert route is not None, (source, target)
        assert route.hops <= 2, (source, target, route)


async def test_chains_translate_through_a_pivot_like_apertium_itself(
    apertium: ApyServer, apertium_translator: ApertiumTranslator
) -> None:
    for source, target in [("fr", "en"), ("en", "pt"), ("pt", "it")]:
        route = apertium_translator.route(source, target)
        assert route is not None and route.hops == 2
        text = {"fr": "Bonjour à tous, merci.", "en": "Good morning.", "pt": "Bom dia."}[source]
        got = await apertium_translator.translate(text, source, target)
        assert got == apertium.translate(text, list(route.codes))
        assert got and got != text


async def test_one_caption_per_language_read_speaker_gets_the_original(
    apertium: ApyServer, apertium_translator: ApertiumTranslator, bus: Bus, uid: str
) -> None:
    call_id = f"c-{uid}"
    state = call_state(
        call_id,
        {
            "p-en": ("en", None),
            "p-es": ("es", None),
            "p-fr": ("fr", None),
            "p-fr-reads-es": ("fr", "es"),
            "p-it-speaker-reads-es": ("it", "es"),
        },
    )
    kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    await kv.create(call_id, state)
    readers = CallReaders(await bus.js.key_value(subjects.CALLS_BUCKET))
    await readers.start()
    try:
        seen = await readers.get(call_id)
        assert seen is not None and len(seen.participants) == 5
        bridge = Bridge(CachingTranslator(apertium_translator, size=100), {call_id: seen})
        await bridge.bridge.handle(segment(call_id))
    finally:
        await readers.stop()
    captions = bridge.by_language()
    # Languages read: en, es, fr; nobody reads Italian (the Italian speaker reads Spanish).
    assert sorted(captions) == ["en", "es", "fr"] and len(bridge.captions) == 3
    assert captions["en"].text == SENTENCE and not captions["en"].translated
    assert captions["en"].untranslated_reason == "same_language"
    assert captions["es"].text == apertium.translate(SENTENCE, ["eng", "spa"])
    assert captions["fr"].text == apertium.translate(SENTENCE, ["eng", "spa", "fra"])
    for lang in ("es", "fr"):
        c = captions[lang]
        assert c.translated and c.untranslated_reason is None
        assert c.source_text == SENTENCE and c.source_language == "en"
        assert c.is_final and c.speaker_participant_id == "p-en"


async def test_partials_then_final_and_a_late_older_revision_is_dropped(
    apertium_translator: ApertiumTranslator, uid: str
) -> None:
    call_id = f"c-{uid}"
    bridge = Bridge(apertium_translator, {call_id: call_state(call_id, {"a": ("en", "es")})})
    await bridge.bridge.handle(segment(call_id, "Good morning", is_final=False, revision=0))
    await bridge.bridge.handle(segment(call_id, SENTENCE, revision=2))
    await bridge.bridge.handle(
        segment(call_id, "Good morning everyone", is_final=False, revision=1)
    )
    spanish = [c for c in bridge.captions if c.language == "es"]
    assert [(c.revision, c.is_final) for c in spanish] == [(0, False), (2, True)]
    assert bridge.bridge.stats.captions_stale == 2  # es and en of revision 1


async def test_missing_pairs_and_unknown_languages_give_untranslated_captions(
    apertium_translator: ApertiumTranslator, uid: str
) -> None:
    call_id = f"c-{uid}"
    states = {call_id: call_state(call_id, {"a": ("en", None), "b": ("de", None)})}
    bridge = Bridge(apertium_translator, states)
    await bridge.bridge.handle(segment(call_id))
    german = bridge.by_language()["de"]
    assert german.text == SENTENCE and not german.translated
    assert german.untranslated_reason == "no_pair"

    odd = Bridge(apertium_translator, {call_id: call_state(call_id, {"a": ("en", "es")})})
    await odd.bridge.handle(segment(call_id, "zorglub", language="xx"))
    caption = odd.by_language()["es"]
    assert caption.untranslated_reason == "no_pair" and caption.text == "zorglub"
    assert sorted(odd.by_language()) == ["es", "xx"]


async def test_no_captions_when_transcription_is_off_or_the_call_is_unknown(
    apertium_translator: ApertiumTranslator, uid: str
) -> None:
    call_id = f"c-{uid}"
    off = call_state(call_id, {"a": ("en", "es")}, transcription=False)
    bridge = Bridge(apertium_translator, {call_id: off})
    await bridge.bridge.handle(segment(call_id))
    await bridge.bridge.handle(segment("c-unknown"))
    assert bridge.captions == []
    stats = bridge.bridge.stats
    assert stats.segments_captions_off == 1 and stats.segments_no_call == 1


async def test_a_dead_apertium_gives_untranslated_captions_then_recovers(uid: str) -> None:
    call_id = f"c-{uid}"
    apy = ApyServer().start()
    translator = ApertiumTranslator(apy.url, timeout_s=5)
    try:
        await translator.start()
        states = {call_id: call_state(call_id, {"a": ("en", "es")})}
        bridge = Bridge(GuardedTranslator(translator, concurrency=2, timeout_s=5), states)
        await bridge.bridge.handle(segment(call_id, "Good morning", revision=0))
        assert bridge.by_language()["es"].translated

        apy.kill()
        await bridge.bridge.handle(segment(call_id, "Good night", utterance_id="u-2"))
        dead = bridge.by_language()["es"]
        assert dead.utterance_id == "u-2" and not dead.translated
        assert dead.untranslated_reason == "backend_failed" and dead.text == "Good night"

        apy.cleanup()
        apy = ApyServer(port=apy.port).start()
        await bridge.bridge.handle(segment(call_id, "Thank you", utterance_id="u-3"))
        back = bridge.by_language()["es"]
        assert back.utterance_id == "u-3" and back.translated and back.text != "Thank you"
    finally:
        await translator.close()
        apy.cleanup()


class FakeLibreTranslate:
    """A small server speaking LibreTranslate's API: en<->es only, one failing word."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self.app = web.Application()
        self.app.router.add_get("/languages", self.languages)
        self.app.router.add_post("/translate", self.translate)
        self.port = free_port()
        self.runner = web.AppRunner(self.app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def languages(self, _: web.Request) -> web.Response:
        return web.json_response(
            [
                {"code": "en", "name": "English", "targets": ["en", "es"]},
                {"code": "es", "name": "Spanish", "targets": ["en", "es"]},
                {"code": "fr", "name": "French", "targets": ["es"]},
            ]
        )

    async def translate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        text = str(body["q"])
        if text == "explode":
            return web.json_response({"error": "internal"}, status=500)
        if text == "slow":
            await asyncio.sleep(3)
        if body.get("api_key") != "k-secret":
            return web.json_response({"error": "Invalid API key"}, status=403)
        return web.json_response({"translatedText": f"[{body['target']}] {text}"})


async def test_libretranslate_backend_translates_routes_and_fails_typed(uid: str) -> None:
    server = FakeLibreTranslate()
    await server.start()
    translator = LibreTranslateTranslator(server.url, api_key="k-secret", timeout_s=1.0)
    try:
        await translator.start()
        assert translator.known and ("en", "es") in translator.capabilities.pairs
        assert await translator.translate("hello", "en", "es") == "[es] hello"
        # fr -> en has no direct pair: through Spanish, one request per hop.
        assert await translator.translate("salut", "fr", "en") == "[en] [es] salut"
        assert server.requests[-1]["format"] == "text"

        call_id = f"c-{uid}"
        states = {call_id: call_state(call_id, {"a": ("en", None), "b": ("es", None)})}
        bridge = Bridge(translator, states)
        await bridge.bridge.handle(segment(call_id, "explode"))
        assert bridge.by_language()["es"].untranslated_reason == "backend_failed"
        await bridge.bridge.handle(segment(call_id, "slow", utterance_id="u-2"))
        assert bridge.by_language()["es"].untranslated_reason == "timeout"
        states[call_id] = call_state(call_id, {"a": ("en", None), "b": ("it", None)})
        await bridge.bridge.handle(segment(call_id, "hello", utterance_id="u-3"))
        assert bridge.by_language()["it"].untranslated_reason == "no_pair"
    finally:
        await translator.close()
        await server.runner.cleanup()


async def test_bridge_service_captions_a_live_call_from_the_kv_state(
    bus: Bus, nats_server: NatsServer, apertium: ApyServer, uid: str
) -> None:
    service_id = f"bridge-{uid}"
    watch = await HeartbeatWatch.start(bus, "translator_bridge", service_id)
    bridge = ServiceProcess(
        "translator_bridge",
        {
            "NATS_URL": nats_server.url,
            "SERVICE_ID": service_id,
            "HEARTBEAT_INTERVAL_S": "0.2",
            "TRANSLATOR_URL": apertium.url,
            "TRANSLATOR_BRIDGE_QUEUE": f"bridges-{uid}",
        },
    ).start()
    try:
        call_id = f"c-{uid}"
        kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
        await kv.create(call_id, call_state(call_id, {"a": ("en", None), "b": ("es", None)}))
        captions: Collector[Caption] = Collector()
        await bus.subscribe(subjects.captions_of(call_id), Caption, captions)
        await bus.flush()
        await bus.publish(subjects.transcript_segment(call_id), segment(call_id))
        await captions.wait(lambda cs: {c.language for c in cs} == {"en", "es"}, 20)
        spanish = next(c for c in captions.items if c.language == "es")
        assert spanish.translated and spanish.text == apertium.translate(SENTENCE, ["eng", "spa"])
        # The bridge's own count: two captions for that one segment, nothing else.
        beat = await watch.wait_state("ready")
        await watch.wait(lambda bs: bs[-1].load.extra.get("captions") == 2.0, 10)
        assert beat.load.extra["translator_known"] == 1.0
        assert watch.beats[-1].load.extra["translator_pairs"] > 20
    finally:
        assert bridge.stop() == 0
    assert not any("Traceback" in line for line in bridge.lines)
