"""One engine per spoken language: ``en`` to tiny.en, every other language to base.

:class:`ModelPlan` is the parsed ``TRANSCRIBER_MODELS`` setting, e.g. ``en=tiny.en,*=base``
(``*``: every language no other entry names; a value is a bundled model name or an
absolute folder). :class:`LanguageRouter` is itself a :class:`SpeechToText` (an adapter,
like livekit's): it sends each request to its language's engine, one batch per engine.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transcriber.engine import (
    SpeechToText,
    SttCapabilities,
    SttRequest,
    SttResult,
    UnsupportedLanguage,
    primary_tag,
)

ANY_LANGUAGE = "*"


class BadModelPlan(ValueError):
    """``TRANSCRIBER_MODELS`` does not parse (the message says how it should look)."""


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """Which model transcribes which language."""

    by_language: dict[str, str]
    fallback: str | None

    @classmethod
    def parse(cls, spec: str) -> "ModelPlan":
        by_language: dict[str, str] = {}
        fallback: str | None = None
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            language, sep, model = (s.strip() for s in item.partition("="))
            if not sep or not language or not model:
                raise BadModelPlan("expected language=model pairs, e.g. en=tiny.en,*=base")
            if language == ANY_LANGUAGE:
                fallback = model
            else:
                by_language[primary_tag(language)] = model
        if not by_language and fallback is None:
            raise BadModelPlan("names no model; e.g. en=tiny.en,*=base")
        return cls(by_language, fallback)

    def models(self) -> list[str]:
        """Every distinct model, in the order first named."""
        names = list(dict.fromkeys(self.by_language.values()))
        if self.fallback is not None and self.fallback not in names:
            names.append(self.fallback)
        return names

    def model_for(self, language: str) -> str | None:
        return self.by_language.get(primary_tag(language), self.fallback)


class LanguageRouter(SpeechToText):
    """Routes each utterance to the engine of its language (see the module docstring)."""

    name = "router"

    def __init__(self, plan: ModelPlan, engine_for: Callable[[str], SpeechToText]) -> None:
        self.plan = plan
        self.engines: dict[str, SpeechToText] = {m: engine_for(m) for m in plan.models()}
        self.capabilities = SttCapabilities(languages=frozenset(), batching=True)

    def load(self) -> None:
        for engine in self.engines.values():
            engine.load()
        languages: set[str] = set()
        for language, model in self.plan.by_language.items():
            if self.engines[model].supports(language):
                languages.add(language)
        if self.plan.fallback is not None:
            explicit = set(self.plan.by_language)
            languages |= self.engines[self.plan.fallback].capabilities.languages - explicit
        self.capabilities = SttCapabilities(
            languages=frozenset(languages),
            batching=True,
            max_audio_s=min(e.capabilities.max_audio_s for e in self.engines.values()),
        )

    def engine_for(self, language: str) -> SpeechToText:
        """The engine that transcribes ``language``; :class:`UnsupportedLanguage` if none."""
        model = self.plan.model_for(language)
        engine = self.engines.get(model) if model is not None else None
        if engine is None or not engine.supports(language):
            raise UnsupportedLanguage(language)
        return engine

    def transcribe(self, requests: Sequence[SttRequest]) -> list[SttResult]:
        groups: dict[int, tuple[SpeechToText, list[int]]] = {}
        for index, request in enumerate(requests):
            engine = self.engine_for(request.language)
            groups.setdefault(id(engine), (engine, []))[1].append(index)
        results: list[SttResult | None] = [None] * len(requests)
        for engine, indices in groups.values():
            for index, result in zip(
                indices, engine.transcribe([requests[i] for i in indices]), strict=True
            ):
                results[index] = result
        return [r for r in results if r is not None]
