"""Translator bridge logic without a backend: routes, codes, adapters, fan-out rules."""

import asyncio
from collections.abc import Iterable

import pytest

from schemas.call_state import CallState
from schemas.captions import Caption, TranscriptSegment
from tests.support.captions import call_state
from translator_bridge.adapters import CachingTranslator, GuardedTranslator
from translator_bridge.bridge import CaptionBridge
from translator_bridge.languages import apertium_codes, libretranslate_codes, same_language
from translator_bridge.readers import caption_languages, languages_read
from translator_bridge.settings import TranslatorBridgeSettings
from translator_bridge.translator import (
    BackendFailed,
    NoPair,
    PairGraph,
    Route,
    TranslationTimeout,
    Translator,
)


def test_routes_are_shortest_prefer_pivots_and_respect_the_hop_limit() -> None:
    pairs = {("eng", "spa"), ("spa", "fra"), ("eng", "cat"), ("cat", "fra"), ("fra", "oci")}
    graph = PairGraph(frozenset(pairs), max_hops=2, preferred=("spa",))
    assert graph.route("eng", "fra") == Route(("eng", "spa", "fra"))
    assert PairGraph(frozenset(pairs), preferred=("cat",)).route("eng", "fra") == Route(
        ("eng", "cat", "fra")
    )
    assert graph.route("eng", "oci") is None  # three hops
    assert PairGraph(frozenset(pairs), max_hops=3).route("eng", "oci") is not None
    assert graph.route("fra", "eng") is None  # pairs are directed


def test_our_codes_map_to_the_backends_variants_first() -> None:
    assert apertium_codes("pt-br") == ["por_BR", "por"] and apertium_codes("en") == ["eng"]
    assert apertium_codes("ca-valencia") == ["cat_valencia", "cat"]
    assert apertium_codes("xx") == [] and apertium_codes("ast") == ["ast"]
    assert libretranslate_codes("pt-br") == ["pt-BR", "pt"]
    assert same_language("en", "en-gb") and not same_language("en", "es")


def test_languages_read_are_caption_languages_or_spoken_ones_and_the_speakers() -> None:
    state = call_state(
        "c", {"a": ("en", None), "b": ("fr", "es"), "c": ("es", None), "d": ("it", "en")}
    )
    assert languages_read(state) == {"en", "es"}
    assert caption_languages(state, "it", "d") == ["it", "en", "es"]  # the speaker's first
    assert caption_languages(state, "en", "a") == ["en", "es"]
    # A language only the speaker reads is not translated into: the speaker is shown its
    # own words, and nobody else reads it.
    alone = call_state("c", {"a": ("en", "de"), "b": ("fr", None)})
    assert caption_languages(alone, "en", "a") == ["en", "fr"]
    assert caption_languages(alone, "fr", "b") == ["fr", "de"]


class Scripted(Translator):
    """A test double backend: fixed pairs, answers "<target>:<text>", counts calls."""

    name = "scripted"
    chains = True

    def __init__(
        self, fail: Exception | None = None, delay: float = 0.0, gate: asyncio.Event | None = None
    ) -> None:
        super().__init__()
        self.fail = fail
        self.delay = delay
        #: When given, every translation waits for it (and ``entered`` says one is waiting).
        self.gate = gate
        self.entered = asyncio.Event()
        self.calls = 0
        self.up = True

    async def close(self) -> None:
        pass

    def codes_for(self, language: str) -> list[str]:
        return [language]

    async def _discover(self) -> Iterable[tuple[str, str]]:
        if not self.up:
            raise BackendFailed("down")
        return [("en", "es"), ("es", "en"), ("es", "fr")]

    async def _translate(self, text: str, route: Route) -> str:
        self.calls += 1
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return f"{route.codes[-1]}:{text}"


async def test_a_backend_down_at_start_is_retried_and_then_used() -> None:
    backend = Scripted()
    backend.up = False
    await backend.start()
    assert not backend.known
    with pytest.raises(BackendFailed):
        await backend.translate("hi", "en", "es")
    backend.up = True
    await backend.refresh(force=True)
    assert await backend.translate("hi", "en", "fr") == "fr:hi"  # through Spanish
    with pytest.raises(NoPair):
        await backend.translate("hi", "fr", "en")


async def test_the_cache_serves_repeats_and_shares_concurrent_requests() -> None:
    backend = Scripted(delay=0.05)
    await backend.start()
    cache = CachingTranslator(backend, size=2)
    results = await asyncio.gather(*(cache.translate("hi", "en", "es") for _ in range(5)))
    assert results == ["es:hi"] * 5 and backend.calls == 1
    assert await cache.translate("hi", "en", "es") == "es:hi" and backend.calls == 1
    await cache.translate("a", "en", "es")
    await cache.translate("b", "en", "es")  # evicts "hi" (size 2)
    await cache.translate("hi", "en", "es")
    assert backend.calls == 4 and cache.hits == 5


async def test_failures_are_not_cached_and_reach_every_waiter() -> None:
    backend = Scripted(fail=BackendFailed("boom"), delay=0.02)
    await backend.start()
    cache = CachingTranslator(backend, size=10)
    outcomes = await asyncio.gather(
        *(cache.translate("hi", "en", "es") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, BackendFailed) for o in outcomes) and backend.calls == 1
    backend.fail = None
    assert await cache.translate("hi", "en", "es") == "es:hi"


async def test_the_guard_bounds_concurrency_and_time() -> None:
    """One slot: while "a" holds it (its backend call waits on a gate), "b" waits for the
    slot and runs out of time there, never reaching the backend; then "a" completes."""
    gate = asyncio.Event()
    backend = Scripted(gate=gate)
    await backend.start()
    guard = GuardedTranslator(backend, concurrency=1, timeout_s=30)
    first = asyncio.create_task(guard.translate("a", "en", "es"))
    await asyncio.wait_for(backend.entered.wait(), 5)
    guard.timeout_s = 0.05  # read per call: only "b" has the short deadline
    with pytest.raises(TranslationTimeout):
        await guard.translate("b", "en", "es")
    assert backend.calls == 1 and guard.timeouts == 1 and not first.done()
    gate.set()
    assert await asyncio.wait_for(first, 5) == "es:a"


def segment(**kw: object) -> TranscriptSegment:
    fields: dict[str, object] = {
        "call_id": "c",
        "utterance_id": "u",
        "participant_id": "a",
        "language": "en",
        "text": "hello",
        "is_final": True,
    }
    fields.update(kw)
    return TranscriptSegment(**fields)  # type: ignore[arg-type]


async def test_the_bridge_never_goes_silent() -> None:
    backend = Scripted(fail=TranslationTimeout("late"))
    await backend.start()
    published: list[Caption] = []
    states: dict[str, CallState] = {"c": call_state("c", {"a": ("en", None), "b": ("es", None)})}

    async def lookup(call_id: str) -> CallState | None:
        return states.get(call_id)

    async def publish(caption: Caption) -> None:
        published.append(caption)

    bridge = CaptionBridge(translator=backend, lookup=lookup, publish=publish)
    await bridge.handle(segment())
    spanish = next(c for c in published if c.language == "es")
    assert spanish.text == "hello" and spanish.untranslated_reason == "timeout"
    assert bridge.stats.untranslated_by_reason == {"timeout": 1}
    published.clear()
    await bridge.handle(segment(text="", revision=1))  # an empty revision clears, everywhere
    assert sorted((c.language, c.text) for c in published) == [("en", ""), ("es", "")]


def test_bridge_settings_keep_the_api_key_secret() -> None:
    s = TranslatorBridgeSettings.from_env(
        {"TRANSLATOR_BACKEND": "libretranslate", "TRANSLATOR_API_KEY": "k-very-secret"}
    )
    assert "k-very-secret" not in repr(s) and s.translator_backend == "libretranslate"


def test_at_one_revision_a_translation_replaces_the_original_text_never_the_reverse() -> None:
    from translator_bridge.bridge import Revisions

    def caption(revision: int, translated: bool) -> Caption:
        return Caption(
            call_id="c1",
            utterance_id="u1",
            speaker_participant_id="p1",
            language="es",
            text="hola" if translated else "hello",
            source_language="en",
            source_text="hello",
            is_final=True,
            revision=revision,
            translated=translated,
        )

    revisions = Revisions()
    assert revisions.claim(caption(3, False)) and revisions.claim(caption(3, True))
    assert not revisions.claim(caption(3, False))  # a timeout after the translation
    assert revisions.claim(caption(3, True))  # the same again (the gateways drop it)
    assert not revisions.claim(caption(2, True)) and revisions.claim(caption(4, False))


async def test_a_late_direct_read_never_replaces_a_newer_state_the_watch_stored() -> None:
    from types import SimpleNamespace
    from typing import cast

    import msgspec
    from nats.js.kv import KeyValue

    from translator_bridge.readers import CallReaders

    older = msgspec.structs.replace(call_state("c1", {"a": ("en", None)}), seq=4)
    newer = msgspec.structs.replace(call_state("c1", {"a": ("en", None), "b": ("fr", None)}), seq=5)
    readers: CallReaders

    class Kv:
        async def get(self, key: str) -> SimpleNamespace:
            # While the read is in flight the watch shows the call's next change.
            readers.calls[key] = newer
            return SimpleNamespace(value=msgspec.json.encode(older))

    readers = CallReaders(cast(KeyValue, Kv()))
    assert await readers.get("c1") is newer and readers.calls["c1"] is newer

    # With nothing stored meanwhile, the read is kept.
    class Plain:
        async def get(self, key: str) -> SimpleNamespace:
            return SimpleNamespace(value=msgspec.json.encode(older))

    fresh = CallReaders(cast(KeyValue, Plain()))
    got = await fresh.get("c1")
    assert got is not None and got.seq == 4 and fresh.calls["c1"].seq == 4
