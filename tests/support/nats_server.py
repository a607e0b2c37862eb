"""Real nats-server processes for tests: one server, or a three-node JetStream cluster.

Each server gets free ports and its own store directory; ``start`` returns once the server
logged "Server is ready" (and, for a cluster, once JetStream has a meta leader), never
after a fixed sleep.
"""

import contextlib
import json
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from devstack.binaries import nats_server_path

READY_LINE = "Server is ready"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """One nats-server with JetStream on loopback."""

    def __init__(
        self,
        store_dir: Path | None = None,
        *,
        name: str = "test",
        port: int | None = None,
        cluster_port: int | None = None,
        routes: list[str] | None = None,
        cluster_name: str = "",
    ) -> None:
        self._tmp = None if store_dir else tempfile.TemporaryDirectory(prefix="nats-")
        self.store_dir = store_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.name = name
        self.port = port or free_port()
        self.http_port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.cluster_name = cluster_name
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        argv = [
            nats_server_path(),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http_port",
            str(self.http_port),
            "--server_name",
            self.name,
        ]
        if self.cluster_port:
            argv += [
                "--cluster_name",
                self.cluster_name,
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
                "--routes",
                ",".join(self.routes),
            ]
        return argv

    def start(self, timeout: float = 15.0) -> "NatsServer":
        self._ready.clear()
        self.process = subprocess.Popen(
            self.argv(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"nats-server {self.name} not ready:\n" + "\n".join(self.log[-20:]))
        return self

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line.rstrip())
            if READY_LINE in line:
                self._ready.set()

    def varz(self, endpoint: str = "jsz") -> dict[str, object]:
        url = f"http://127.0.0.1:{self.http_port}/{endpoint}"
        with urllib.request.urlopen(url, timeout=2) as resp:
            result: dict[str, object] = json.load(resp)
            return result

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_pipe()

    def kill(self) -> None:
        """Hard crash (SIGKILL), for fault tests."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self._pump_thread.join(5)
            self.process.stdout.close()

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()


class NatsCluster:
    """Three JetStream nodes routed to each other, for fault tests."""

    def __init__(self, size: int = 3) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="nats-cluster-")
        cluster_ports = [free_port() for _ in range(size)]
        routes = [f"nats://127.0.0.1:{p}" for p in cluster_ports]
        self.nodes = [
            NatsServer(
                Path(self._tmp.name) / f"n{i}",
                name=f"n{i}",
                cluster_port=cluster_ports[i],
                routes=[r for j, r in enumerate(routes) if j != i],
                cluster_name="test-cluster",
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 30.0) -> "NatsCluster":
        threads = [threading.Thread(target=node.start) for node in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._meta_leader() is not None:
                return self
            time.sleep(0.1)
        raise RuntimeError("JetStream cluster elected no meta leader")

    def _meta_leader(self) -> str | None:
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                info = node.varz("jsz")
            except OSError:
                continue
            meta = info.get("meta_cluster")
            if (
                isinstance(meta, dict)
                and meta.get("leader")
                and meta.get("cluster_size") == len(self.nodes)
            ):
                return str(meta["leader"])
        return None

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop()
        with contextlib.suppress(OSError):
            self._tmp.cleanup()
