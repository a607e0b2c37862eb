"""A real MongoDB wire-protocol server for tests: ``nx-27017`` (SQLite underneath).

MongoDB itself cannot be installed on these machines; motor talks to nx-27017 over the real
wire protocol. Free port, its own data directory (one SQLite file per database), ready once
it logs "Listening on", stopped on teardown.
"""

import contextlib
import subprocess
import tempfile
import threading
from pathlib import Path

from devstack.binaries import nx_27017_path
from tests.support.nats_server import free_port

READY_LINE = "Listening on"


class MongoServer:
    """One nx-27017 on loopback."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="nx27017-")
        self.dir = Path(self._tmp.name)
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "MongoServer":
        self.process = subprocess.Popen(
            [
                nx_27017_path(),
                "--data-dir",
                str(self.dir / "data"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--pid-file",
                str(self.dir / "nx.pid"),
                "--log-file",
                str(self.dir / "nx.log"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("nx-27017 not ready:\n" + "\n".join(self.log[-20:]))
        return self

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line.rstrip())
            if READY_LINE in line:
                self._ready.set()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self._pump_thread.join(5)
            self.process.stdout.close()

    def cleanup(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self._tmp.cleanup()
