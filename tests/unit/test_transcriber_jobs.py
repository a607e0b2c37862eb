"""Transcriber logic without models: chunk checks, coalescing, segments, model plans,
language routing (with a test double engine), settings, bundled model assembly."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import pytest

from schemas.errors import SettingsError
from schemas.media import AudioChunk
from transcriber.engine import (
    BadAudio,
    ModelUnavailable,
    SpeechToText,
    SttCapabilities,
    SttRequest,
    SttResult,
    UnsupportedLanguage,
)
from transcriber.jobs import (
    BadChunk,
    Job,
    Progress,
    coalesce,
    segment_for,
    to_request,
    worth_publishing,
)
from transcriber.models import assemble_base, check_folder, resolve
from transcriber.router import BadModelPlan, LanguageRouter, ModelPlan
from transcriber.settings import TranscriberSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def chunk(**kw: object) -> AudioChunk:
    fields: dict[str, object] = {
        "call_id": "c1",
        "participant_id": "p1",
        "utterance_id": "u1",
        "sequence": 0,
        "is_final": True,
        "start_s": 1.0,
        "end_s": 2.0,
        "started_at": T0,
        "speech_end_s": 1.9,
        "pcm": np.zeros(16000, dtype="<i2").tobytes(),
    }
    fields.update(kw)
    return AudioChunk(**fields)  # type: ignore[arg-type]


def job(c: AudioChunk) -> Job[str]:
    return Job(chunk=c, request=to_request(c), message="msg", queued_at=T0 + timedelta(seconds=1.2))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sample_rate": 8000}, "sample_rate"),
        ({"pcm": b"\x01\x02\x03"}, "even"),
        ({"pcm": b""}, "empty"),
        ({"language": "EN"}, "language"),
        ({"sequence": -1}, "sequence"),
    ],
)
def test_unusable_chunks_are_refused_with_a_reason(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(BadChunk, match=reason):
        to_request(chunk(**changes))


def test_only_the_newest_chunk_of_each_utterance_is_transcribed() -> None:
    a0, a2, a1 = (job(chunk(sequence=s, is_final=s == 2)) for s in (0, 2, 1))
    b0 = job(chunk(utterance_id="u2"))
    keep, dropped = coalesce([a0, a2, b0, a1])
    assert keep == [a2, b0] and dropped == [a0, a1]
    progress = Progress(size=1)
    progress.record(a2)
    assert progress.is_stale(a1) and not progress.is_stale(b0)
    progress.record(b0)  # the LRU forgets u1
    assert not progress.is_stale(a1)


def test_a_segment_carries_the_speech_end_and_where_the_time_went() -> None:
    j = job(chunk(sequence=3))
    result = SttResult(text="hello", confidence=0.9, no_speech_probability=0.01, model="tiny.en")
    seg = segment_for(j, result, started_at=T0 + timedelta(seconds=1.25), transcription_ms=120)
    assert seg.speech_ended_at == T0 + timedelta(seconds=0.9)
    assert seg.timings.vad_wait_ms == 300.0 and seg.timings.queue_ms == 50.0
    assert seg.timings.transcription_ms == 120 and seg.revision == 3 and seg.end_s == 1.9
    assert seg.model == "tiny.en" and seg.is_final
    empty = SttResult(text="", confidence=None, no_speech_probability=0.9, model="m")
    assert not worth_publishing(job(chunk()), empty)  # noise: nothing to replace
    assert worth_publishing(j, empty)  # clears an earlier caption of the utterance


def test_model_plans_parse_and_fail_clearly() -> None:
    plan = ModelPlan.parse("en=tiny.en, *=base, pt-br=/models/pt")
    assert plan.model_for("en") == "tiny.en" and plan.model_for("fr") == "base"
    assert plan.model_for("pt") == "/models/pt" and plan.models() == [
        "tiny.en",
        "/models/pt",
        "base",
    ]
    assert ModelPlan.parse("en=tiny.en").model_for("fr") is None
    for bad in ("", "en", "=base", "en=,"):
        with pytest.raises(BadModelPlan):
            ModelPlan.parse(bad)
    with pytest.raises(SettingsError, match="TRANSCRIBER_MODELS"):
        TranscriberSettings.from_env({"TRANSCRIBER_MODELS": "tiny.en"})


class FakeEngine(SpeechToText):
    """A test double: says which model heard which language."""

    def __init__(self, name: str, languages: set[str]) -> None:
        self.name = name
        self.languages = frozenset(languages)
        self.capabilities = SttCapabilities(languages=frozenset())
        self.calls: list[int] = []

    def load(self) -> None:
        self.capabilities = SttCapabilities(languages=self.languages, batching=True)

    def transcribe(self, requests: Sequence[SttRequest]) -> list[SttResult]:
        self.calls.append(len(requests))
        return [SttResult(f"{self.name}:{r.language}", None, None, self.name) for r in requests]


def test_the_router_batches_per_engine_and_refuses_unknown_languages() -> None:
    engines = {"tiny.en": FakeEngine("tiny.en", {"en"}), "base": FakeEngine("base", {"en", "fr"})}
    router = LanguageRouter(ModelPlan.parse("en=tiny.en,*=base"), engines.__getitem__)
    router.load()
    assert router.capabilities.languages == {"en", "fr"}
    audio = np.zeros(1600, dtype=np.float32)
    out = router.transcribe(
        [SttRequest(audio, "fr"), SttRequest(audio, "en"), SttRequest(audio, "en-gb")]
    )
    assert [r.text for r in out] == ["base:fr", "tiny.en:en", "tiny.en:en-gb"]
    assert engines["tiny.en"].calls == [2] and engines["base"].calls == [1]
    with pytest.raises(UnsupportedLanguage):
        router.check(SttRequest(audio, "de"))
    with pytest.raises(BadAudio):
        router.check(SttRequest(np.zeros(0, dtype=np.float32), "en"))


def test_the_base_model_is_joined_once_and_repaired_when_damaged(tmp_path: Path) -> None:
    folder = assemble_base(tmp_path)
    model = folder / "model.bin"
    assert model.stat().st_size == 145_217_532
    assert check_folder("base", folder) == folder
    stamp = model.stat().st_mtime_ns
    assert assemble_base(tmp_path) == folder and model.stat().st_mtime_ns == stamp
    with model.open("r+b") as f:
        f.truncate(1000)
    assemble_base(tmp_path)
    assert model.stat().st_size == 145_217_532
    assert not list(folder.glob("*.tmp"))


def test_models_come_from_packages_or_absolute_folders_only(tmp_path: Path) -> None:
    assert resolve("tiny.en", tmp_path).folder.name == "model"
    with pytest.raises(ModelUnavailable, match="absolute"):
        resolve("small", tmp_path)
    with pytest.raises(ModelUnavailable, match="lacks"):
        resolve(str(tmp_path), tmp_path)


def test_settings_defaults_are_the_low_latency_ones() -> None:
    s = TranscriberSettings.from_env({})
    assert s.transcriber_models == "en=tiny.en,*=base" and s.whisper_window == "trimmed"
    assert s.whisper_compute_type == "int8" and s.transcriber_queue == "transcribers"
    assert msgspec.json.decode(msgspec.json.encode(s.redacted()))["whisper_device"] == "cpu"
