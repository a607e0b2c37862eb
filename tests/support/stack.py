"""The embedded stack (``python -m devstack``, what ``make run`` starts) on free ports."""

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.support.nats_server import free_port

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "All components ready"


class EmbeddedStack:
    """Start with :meth:`start` (returns once every component is ready), stop with :meth:`stop`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.gateway_port = free_port()
        self.nats_port = free_port()
        self.mongo_port = free_port()
        self.apy_port = free_port()
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def log(self, component: str) -> Path:
        return self.run_dir / "logs" / f"{component}.log"

    async def start(self, timeout: float = 60) -> "EmbeddedStack":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "devstack",
            cwd=ROOT,
            env={
                **os.environ,
                "STACK_DIR": str(self.run_dir),
                "STACK_NATS_PORT": str(self.nats_port),
                "GATEWAY_PORT": str(self.gateway_port),
                "STACK_MONGO_PORT": str(self.mongo_port),
                "STACK_METRICS_PORT": "0",
                "STACK_APY_PORT": str(self.apy_port),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        await asyncio.wait_for(self._read_until(READY_LINE), timeout)
        return self

    async def _read_until(self, marker: str) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                raise AssertionError("devstack exited early:\n" + "".join(self.lines))
            self.lines.append(raw.decode())
            if marker in self.lines[-1]:
                return

    async def stop(self, timeout: float = 60) -> tuple[int, str]:
        """Ctrl-C (SIGINT), as a user would; returns the exit code and the rest of the output."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, rest.decode()
