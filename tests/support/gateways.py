"""Real gateway processes (``python -m gateway``) for integration, fault and bench runs.

Each instance gets a free port and its own log file; :meth:`GatewayCluster.start` returns
once every ``/readyz`` answers 200. Helpers seed conversations through the operator
endpoint and log users in through the development token endpoint, as the embedded stack
does.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.nats_server import free_port, service_env

JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
OPERATOR_TOKEN = "test-operator-token"
TURN_SECRET = "test-turn-secret"

TEST_ENV = {
    "JWT_SECRET": JWT_SECRET,
    "DEV_TOKENS_ENABLED": "true",
    "OPERATOR_TOKEN": OPERATOR_TOKEN,
    "TURN_URLS": "turn:127.0.0.1:3478?transport=udp",
    "TURN_SECRET": TURN_SECRET,
    "STUN_URLS": "stun:127.0.0.1:3478",
    "CALL_RING_TIMEOUT_S": "4",
    "CALL_HEARTBEAT_INTERVAL_S": "0.5",
    "CALL_HEARTBEAT_TIMEOUT_S": "4",
    "CALL_RECONNECT_GRACE_S": "3",
    "CALL_SWEEP_INTERVAL_S": "0.1",
    "HEARTBEAT_INTERVAL_S": "1",
    "GATEWAY_GRACEFUL_TIMEOUT_S": "1",
    "DRAIN_TIMEOUT_S": "3",
    "LOG_LEVEL": "info",
}


@dataclass
class GatewayProcess:
    service_id: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class GatewayCluster:
    """N gateway processes on one NATS."""

    def __init__(self, nats_url: str, count: int = 2, env: Mapping[str, str] | None = None):
        self.nats_url = nats_url
        self.count = count
        self.env = {**TEST_ENV, **(env or {})}
        self.log_dir = Path(tempfile.mkdtemp(prefix="gateways-"))
        self.gateways: list[GatewayProcess] = []

    def spawn(self, index: int) -> GatewayProcess:
        port = free_port()
        service_id = f"gw-{index}-{os.getpid()}-{port}"
        log_path = self.log_dir / f"{service_id}.log"
        env = {
            **os.environ,
            **self.env,
            **service_env(self.nats_url, "gateway"),
            "GATEWAY_PORT": str(port),
            "SERVICE_ID": service_id,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        }
        # Per-process values (a trace file each): "{service_id}" in a value is replaced.
        env = {k: v.replace("{service_id}", service_id) for k, v in env.items()}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return GatewayProcess(service_id, port, proc, log_path)

    def start(self, timeout: float = 30.0) -> "GatewayCluster":
        self.gateways = [self.spawn(i) for i in range(self.count)]
        for gw in self.gateways:
            self.wait_ready(gw, timeout)
        return self

    def wait_ready(self, gw: GatewayProcess, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if gw.process.poll() is not None:
                raise RuntimeError(f"gateway exited during start:\n{gw.log_text()[-3000:]}")
            try:
                if httpx.get(f"{gw.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready:\n{gw.log_text()[-3000:]}")

    @property
    def urls(self) -> list[str]:
        return [gw.url for gw in self.gateways]

    def kill(self, index: int) -> None:
        """SIGKILL: a crash, nothing cleaned up."""
        proc = self.gateways[index].process
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for gw in self.gateways:
            if gw.process.poll() is None:
                gw.process.terminate()
        for gw in self.gateways:
            try:
                gw.process.wait(10)
            except subprocess.TimeoutExpired:
                gw.process.kill()
                gw.process.wait()
        if not os.environ.get("KEEP_GATEWAY_LOGS"):
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def tracebacks(self) -> list[str]:
        return [gw.service_id for gw in self.gateways if "Traceback" in gw.log_text()]

    # --- helpers the embedded stack also uses --------------------------------------------
    def put_conversation(
        self,
        conversation_id: str,
        type_: str,
        members: list[str],
        roles: dict[str, str] | None = None,
    ) -> None:
        roles = roles or {}
        body: dict[str, Any] = {
            "type": type_,
            "members": [{"userId": m, "role": roles.get(m, "member")} for m in members],
        }
        resp = httpx.put(
            f"{self.urls[0]}/api/admin/conversations/{conversation_id}",
            json=body,
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            timeout=10,
        )
        resp.raise_for_status()

    def token(self, user_id: str, name: str = "", language: str = "en") -> str:
        resp = httpx.post(
            f"{self.urls[0]}/api/dev/token",
            json={"userId": user_id, "displayName": name or user_id, "language": language},
            timeout=10,
        )
        resp.raise_for_status()
        token: str = resp.json()["token"]
        return token
