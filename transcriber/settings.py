"""Transcriber settings, read once from the environment."""

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from schemas import subjects
from schemas.settings import PositiveFloat, ServiceSettings


def default_cache_dir() -> str:
    """Where the multilingual base model is joined from its wheels (once per host)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "meeshy-calls" / "models")


class TranscriberSettings(ServiceSettings, frozen=True, kw_only=True):
    """Settings of one transcriber instance."""

    #: Durable JetStream consumer shared by every transcriber instance (each chunk goes to
    #: one of them; a chunk is acknowledged only once its segment is published).
    transcriber_queue: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = (
        subjects.TRANSCRIBER_DURABLE
    )
    #: Which model transcribes which spoken language: ``language=model`` pairs, ``*`` for
    #: every other language; a model is ``tiny.en``, ``base`` (bundled) or an absolute
    #: folder holding a CTranslate2 Whisper conversion.
    transcriber_models: str = "en=tiny.en,*=base"
    #: Folder where bundled models are assembled (the base model is joined there once).
    whisper_cache_dir: str = msgspec.field(default_factory=default_cache_dir)
    #: ``cpu``, ``cuda`` or ``auto`` (CTranslate2 devices).
    whisper_device: Literal["cpu", "cuda", "auto"] = "cpu"
    #: CTranslate2 compute type (``int8`` on CPUs; ``float16`` or ``int8_float16`` on GPUs).
    whisper_compute_type: str = "int8"
    #: Threads per model on a CPU; 0 lets CTranslate2 choose (4, or OMP_NUM_THREADS).
    whisper_cpu_threads: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0
    #: ``trimmed``: encode the utterance plus ``WHISPER_WINDOW_PAD_S`` of silence (fast);
    #: ``full``: Whisper's 30 s window (3-5x slower on a CPU, the reference).
    whisper_window: Literal["trimmed", "full"] = "trimmed"
    whisper_window_pad_s: Annotated[float, msgspec.Meta(ge=0, le=10)] = 2.0
    #: Decoder budget: at most base + per_s x seconds tokens (stops trimmed-window loops).
    whisper_budget_base_tokens: Annotated[int, msgspec.Meta(ge=1, le=400)] = 8
    whisper_budget_tokens_per_s: Annotated[float, msgspec.Meta(gt=0, le=50)] = 5.0
    #: Most utterances transcribed in one batch (concurrent speakers).
    transcriber_batch_size: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    #: Unacknowledged chunks this instance may hold (its bounded queue).
    transcriber_max_in_hand: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 8
    #: A chunk whose worker died is offered to another after this long without an ack.
    transcriber_ack_wait_s: PositiveFloat = 5.0
    #: Deliveries of a chunk before it is dead-lettered (a chunk that crashes workers).
    transcriber_max_deliver: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3

    def __post_init__(self) -> None:
        from transcriber.router import BadModelPlan, ModelPlan

        try:
            ModelPlan.parse(self.transcriber_models)
        except BadModelPlan as exc:
            raise ValueError(f"TRANSCRIBER_MODELS {exc}") from None
