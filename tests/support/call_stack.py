"""A whole call system as real processes: gateways, mode selectors and media nodes on one NATS.

:class:`CallStack` extends :class:`tests.support.gateways.GatewayCluster` (gateways with the
test settings) with ``python -m gateway.selector``, ``python -m media_node`` and (with
``archive_env``) ``python -m gateway.archive`` processes; :meth:`CallStack.start_all`
returns once every gateway answers ``/readyz`` and every other service has said
``service.ready``. Any process can be SIGKILLed by id. ``common_env`` goes to every process
(e.g. ``NATS_STREAM_REPLICAS=3`` on a cluster, whose comma-separated URL is ``nats_url``).
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.gateways import GatewayCluster, GatewayProcess
from tests.support.nats_server import service_env

SELECTOR_ENV = {
    "SELECTOR_TO_P2P_HOLD_S": "1.0",
    "SELECTOR_MIGRATION_DEADLINE_S": "15",
    "SELECTOR_PREWARM": "false",
    "SELECTOR_RETRY_BASE_S": "1",
    "SELECTOR_NODE_EXPIRY_S": "3",
    "SELECTOR_SCAN_INTERVAL_S": "0.5",
}
MEDIA_NODE_ENV = {
    "MEDIA_NODE_REPORT_INTERVAL_S": "0.5",
    "MEDIA_NODE_VAD": "energy",
    "MEDIA_NODE_LEASE_SWEEP_S": "0.2",
}
GATEWAY_MEDIA_ENV = {"MEDIA_LEASE_S": "6", "MEDIA_RPC_TIMEOUT_S": "10"}


@dataclass
class ServiceProcess:
    kind: str
    service_id: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class CallStack(GatewayCluster):
    """Gateways, selectors and media nodes (see the module docstring)."""

    def __init__(
        self,
        nats_url: str,
        *,
        gateways: int = 2,
        selectors: int = 1,
        media_nodes: int = 1,
        env: Mapping[str, str] | None = None,
        selector_env: Mapping[str, str] | None = None,
        media_env: Mapping[str, str] | None = None,
        archive_env: Mapping[str, str] | None = None,
        common_env: Mapping[str, str] | None = None,
    ) -> None:
        common = dict(common_env or {})
        super().__init__(nats_url, gateways, {**GATEWAY_MEDIA_ENV, **common, **(env or {})})
        self.selector_count = selectors
        self.media_count = media_nodes
        self.archive_count = 1 if archive_env is not None else 0
        self.selector_env = {**SELECTOR_ENV, **common, **(selector_env or {})}
        self.media_env = {**MEDIA_NODE_ENV, **common, **(media_env or {})}
        self.archive_env = {**common, **(archive_env or {})}
        self.services: dict[str, ServiceProcess] = {}
        self._seq = 0

    def _spawn_service(self, kind: str, module: str, extra: Mapping[str, str]) -> ServiceProcess:
        self._seq += 1
        service_id = f"{kind.replace('_', '-')}-{self._seq}-{os.getpid()}"
        log_path = self.log_dir / f"{service_id}.log"
        env = {
            **os.environ,
            **service_env(self.nats_url, kind),
            "SERVICE_ID": service_id,
            "HEARTBEAT_INTERVAL_S": "0.5",
            "DRAIN_TIMEOUT_S": "3",
            "LOG_LEVEL": "info",
            **{k: v for k, v in self.env.items() if k.startswith("OTEL_")},
            **extra,
        }
        env = {k: v.replace("{service_id}", service_id) for k, v in env.items()}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = ServiceProcess(kind, service_id, proc, log_path)
        self.services[service_id] = service
        return service

    def add(self, kind: str, timeout: float = 40.0) -> ServiceProcess:
        """Start one more selector (``selector``), media node (``media_node``) or archive
        (``archive``); returns once it has logged ``service.ready`` (after connecting,
        provisioning, starting)."""
        module, extra = {
            "selector": ("gateway.selector", self.selector_env),
            "media_node": ("media_node", self.media_env),
            "archive": ("gateway.archive", self.archive_env),
        }[kind]
        service = self._spawn_service(kind, module, extra)
        deadline = time.monotonic() + timeout
        while '"service.ready"' not in service.log_text():
            if service.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{service.service_id} not ready:\n{service.log_text()[-3000:]}")
            time.sleep(0.05)
        return service

    def start_all(self) -> "CallStack":
        self.start()
        for _ in range(self.media_count):
            self.add("media_node")
        for _ in range(self.selector_count):
            self.add("selector")
        for _ in range(self.archive_count):
            self.add("archive")
        return self

    def of_kind(self, kind: str) -> list[ServiceProcess]:
        return [s for s in self.services.values() if s.kind == kind and s.process.poll() is None]

    def kill_service(self, service_id: str) -> None:
        proc = self.services[service_id].process
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for service in self.services.values():
            if service.process.poll() is None:
                service.process.terminate()
        for service in self.services.values():
            try:
                service.process.wait(10)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        super().stop()

    def tracebacks(self) -> list[str]:
        found = super().tracebacks()
        return found + [s.service_id for s in self.services.values() if "Traceback" in s.log_text()]

    def logs(self) -> str:
        parts: list[GatewayProcess | ServiceProcess] = [*self.gateways, *self.services.values()]
        return "\n".join(f"--- {p.service_id}\n{p.log_text()[-4000:]}" for p in parts)
