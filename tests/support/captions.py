"""Real parts for the caption tests: Apertium APy, service processes, speech as chunks.

- :class:`ApyServer`: Debian's Apertium APy on a free loopback port (the launcher the
  embedded stack uses), ready once ``/listPairs`` answers with pairs.
- :class:`ServiceProcess`: ``python -m <service>`` as a child process, ready once it logs
  ``service.ready`` (after loading its models), stopped with SIGTERM (or killed).
- :func:`speech_chunks`: espeak-ng speech cut into ``AudioChunk``s by the media node's own
  :class:`UtteranceCutter` and Silero VAD, as the tap would send them.
- :func:`call_state`: a ``CallState`` for the KV bucket ``calls`` with given readers.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from devstack.apertium import APY_ENV, apy_argv
from media_node.tap import WINDOW, SileroVad, UtteranceCutter
from schemas.call_state import CallParticipantState, CallState
from schemas.media import AudioChunk
from tests.support.nats_server import free_port, with_role
from tests.support.speech import SAMPLE_RATE, Pcm

ROOT = Path(__file__).resolve().parents[2]


class ApyServer:
    """Apertium APy on loopback (see the module docstring)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="apy-")
        self.log_path = Path(self._dir.name) / "apy.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "ApyServer":
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                apy_argv(self.port),
                cwd=self._dir.name,
                env={**os.environ, **APY_ENV},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("apertium-apy exited:\n" + self.log_path.read_text()[-2000:])
            try:
                if self.pairs():
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("apertium-apy not ready:\n" + self.log_path.read_text()[-2000:])

    def pairs(self) -> list[tuple[str, str]]:
        with urllib.request.urlopen(f"{self.url}/listPairs", timeout=2) as resp:
            data = json.load(resp)["responseData"]
        return [(p["sourceLanguage"], p["targetLanguage"]) for p in data]

    def translate(self, text: str, codes: list[str]) -> str:
        """What APy itself makes of ``text`` along ``codes`` (the reference in tests)."""
        import urllib.parse

        if len(codes) == 2:
            query = {"langpair": "|".join(codes), "q": text, "markUnknown": "no"}
            path = "/translate"
        else:
            query = {"langpairs": "|".join(codes), "q": text, "markUnknown": "no"}
            path = "/translateChain"
        data = urllib.parse.urlencode(query).encode()
        with urllib.request.urlopen(f"{self.url}{path}", data=data, timeout=10) as resp:
            return " ".join(str(json.load(resp)["responseData"]["translatedText"]).split())

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def cleanup(self) -> None:
        self.stop()
        self._dir.cleanup()


class ServiceProcess:
    """One of our services as a child process (see the module docstring)."""

    def __init__(self, module: str, env: Mapping[str, str]) -> None:
        self.module = module
        self.env = dict(env)
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._pump: threading.Thread | None = None

    def start(self, timeout: float = 90.0) -> "ServiceProcess":
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=ROOT,
            env={**os.environ, **with_role(self.module, self.env)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"{self.module} not ready:\n" + "\n".join(self.lines[-30:]))
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip())
            if '"service.ready"' in line:
                self._ready.set()

    def logged(self, event: str) -> list[dict[str, object]]:
        """Every log record of ``event`` so far."""
        out = []
        for line in list(self.lines):
            if f'"{event}"' in line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._join()
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._join()

    def _join(self) -> None:
        if self._pump is not None:
            self._pump.join(5)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()


def speech_chunks(
    pcm: Pcm,
    *,
    call_id: str,
    participant_id: str,
    language: str,
    started_at: datetime | None = None,
    cutter: UtteranceCutter | None = None,
) -> list[AudioChunk]:
    """``pcm`` (with silence after it) cut into chunks as the media node's tap would."""
    cutter = cutter or UtteranceCutter()
    vad = SileroVad()
    base = started_at or datetime.now(UTC)
    padded = np.concatenate([np.zeros(WINDOW * 4, np.int16), pcm, np.zeros(SAMPLE_RATE, np.int16)])
    out: list[AudioChunk] = []
    for i in range(0, len(padded) - WINDOW + 1, WINDOW):
        window = padded[i : i + WINDOW]
        for u in cutter.push(window, vad(window)):
            start_s = u.start_sample / SAMPLE_RATE
            out.append(
                AudioChunk(
                    call_id=call_id,
                    participant_id=participant_id,
                    utterance_id=u.utterance_id,
                    sequence=u.sequence,
                    is_final=u.is_final,
                    start_s=round(start_s, 3),
                    end_s=round((u.start_sample + len(u.pcm)) / SAMPLE_RATE, 3),
                    started_at=base + timedelta(seconds=start_s),
                    language=language,
                    speech_end_s=round(u.speech_end_sample / SAMPLE_RATE, 3),
                    pcm=u.pcm.astype("<i2").tobytes(),
                )
            )
    return out


def call_state(
    call_id: str,
    readers: Mapping[str, tuple[str, str | None]],
    *,
    transcription: bool = True,
) -> CallState:
    """A GROUP call in SFU mode whose participants speak and read the given languages:
    ``{participant_id: (spoken, caption_language or None)}``."""
    now = time.time()
    return CallState(
        call_id=call_id,
        conversation_id=f"conv-{call_id}",
        conversation_type="GROUP",
        status="active",
        mode="sfu",
        transcription=transcription,
        initiator_user_id="u-0",
        created_at=now,
        started_at=now,
        max_end_at=now + 3600,
        heartbeat_timeout_s=30,
        reconnect_grace_s=15,
        participants=[
            CallParticipantState(
                participant_id=pid,
                kind="user",
                principal_id=f"u-{pid}",
                user_id=f"u-{pid}",
                language=spoken,
                caption_language=reads,
                joined_at=now,
                last_seen_at=now,
            )
            for pid, (spoken, reads) in readers.items()
        ],
    )
