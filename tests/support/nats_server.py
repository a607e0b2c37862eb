"""Real nats-server processes for tests: one server, or a three-node JetStream cluster.

Each server gets free ports and its own store directory; ``start`` returns once the server
logged "Server is ready" (and, for a cluster, once JetStream has a meta leader), never
after a fixed sleep.

Permissions are on (``schemas/permissions.py``): each service role is a user with a random
password, and a connection without credentials is the all-access test user (the test
process itself). Services started by the test helpers connect as their own role
(:func:`service_env`), so a subject a service uses without being allowed to is a
permissions violation the server logs, and ``tests/conftest.py`` fails the test.
"""

import asyncio
import contextlib
import dataclasses
import json
import re
import secrets
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack.binaries import nats_server_path
from schemas import permissions

READY_LINE = "Server is ready"
#: The user a connection without credentials becomes: the test process, allowed everything.
TEST_USER = "test"
_VIOLATION_RE = re.compile(r"(Publish|Subscription|Authorization) Violation|authentication error")
#: ``ARCHIVE_DURABLE`` prefixes the test server grants the archive role besides the default
#: one (its durables are named in its permissions): tests that run an archive process of
#: their own, apart from the others' on the session server, use one of these.
TEST_ARCHIVE_DURABLES = ("archive-crash", "archive-history", "archive-bus-restart")
#: Servers running now, by client port (helpers that only hold a URL find them here).
_RUNNING: dict[int, "NatsServer"] = {}


def _test_roles() -> list[permissions.Role]:
    """Every role, the archive with the test durables of :data:`TEST_ARCHIVE_DURABLES`."""
    archive = permissions.ARCHIVE
    extra = tuple(c for p in TEST_ARCHIVE_DURABLES for c in permissions.archive_consumes(p))
    tested = dataclasses.replace(archive, consumes=archive.consumes + extra)
    return [tested if r is archive else r for r in permissions.ROLES.values()]


def provision_everything(url: str) -> None:
    """Provision every stream and bucket as the gateway would (from a sync fixture): for a
    server of its own whose services start before any gateway, since each waits for the
    streams and buckets it uses but does not own (``schemas/permissions.py``)."""
    from schemas.bus import Bus
    from schemas.provisioning import provision
    from schemas.settings import BusSettings

    async def run() -> None:
        settings = BusSettings(nats_url=url)
        bus = await Bus.connect(settings, "test-provisioning")
        try:
            await provision(bus.js, settings)
        finally:
            await bus.close()

    asyncio.run(run())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_passwords() -> dict[str, str]:
    """A fresh random password for every role and the test user."""
    return {name: secrets.token_urlsafe(18) for name in (*permissions.ROLES, TEST_USER)}


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
        secure: bool = True,
        no_auth_user: str | None = TEST_USER,
        passwords: dict[str, str] | None = None,
    ) -> None:
        self._tmp = None if store_dir else tempfile.TemporaryDirectory(prefix="nats-")
        self.store_dir = store_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        #: Per-role users with their permissions; off: anyone may do anything.
        self.secure = secure
        self.no_auth_user = no_auth_user
        #: Role (and test user) -> password; the nodes of a cluster share them.
        self.passwords = passwords or new_passwords()
        self.test_password = self.passwords[TEST_USER]
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
        if self.secure:
            argv += ["--config", str(self._write_config())]
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

    def _write_config(self) -> Path:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        path = self.store_dir / "auth.conf"
        path.write_text(
            permissions.server_config(
                self.passwords,
                roles=_test_roles(),
                extra_users={TEST_USER: self.test_password},
                no_auth_user=self.no_auth_user,
            )
        )
        path.chmod(0o600)
        return path

    # --- credentials -----------------------------------------------------------------------
    def credentials(self, role: str) -> tuple[str, str]:
        """``(user, password)`` of one role (``schemas.permissions.ROLES``) or the test user."""
        if role == TEST_USER:
            return TEST_USER, self.test_password
        return permissions.role_for(role).name, self.passwords[role]

    def service_env(self, role: str) -> dict[str, str]:
        """The environment of a service process connecting as ``role``."""
        if not self.secure:
            return {"NATS_URL": self.url}
        user, password = self.credentials(role)
        return {"NATS_URL": self.url, "NATS_USER": user, "NATS_PASSWORD": password}

    def url_for(self, role: str) -> str:
        """This server's URL with the credentials of ``role`` in it."""
        if not self.secure:
            return self.url
        user, password = self.credentials(role)
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"

    def violations(self) -> list[str]:
        """Every permissions or authorization violation the server logged so far."""
        return [line for line in list(self.log) if _VIOLATION_RE.search(line)]

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
        _RUNNING[self.port] = self
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
        if _RUNNING.get(self.port) is self:
            del _RUNNING[self.port]
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
        if _RUNNING.get(self.port) is self:
            del _RUNNING[self.port]
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


def running_servers() -> list[NatsServer]:
    """The test servers running now."""
    return list(_RUNNING.values())


def _server_of(url: str) -> NatsServer | None:
    port = urlsplit(url.split(",", maxsplit=1)[0].strip()).port
    return _RUNNING.get(port) if port is not None else None


def service_env(nats_url: str, role: str) -> dict[str, str]:
    """The NATS environment of a service connecting as ``role`` to the test server(s) at
    ``nats_url`` (a cluster's comma-separated URLs too); a URL of no test server is kept
    as it is, without credentials."""
    server = _server_of(nats_url)
    if server is None or not server.secure:
        return {"NATS_URL": nats_url}
    user, password = server.credentials(role)
    return {"NATS_URL": nats_url, "NATS_USER": user, "NATS_PASSWORD": password}


#: The NATS role of each service entry point (``python -m <module>``).
MODULE_ROLES = {
    "gateway": "gateway",
    "gateway.selector": "selector",
    "gateway.archive": "archive",
    "media_node": "media_node",
    "transcriber": "transcriber",
    "translator_bridge": "translator_bridge",
}


def with_role(module: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` of a ``python -m <module>`` service, plus the credentials of its role when
    its ``NATS_URL`` is a test server and it names no user of its own."""
    out = dict(env)
    role = MODULE_ROLES.get(module)
    if role is None or "NATS_URL" not in out or out.get("NATS_USER"):
        return out
    return {**out, **service_env(out["NATS_URL"], role)}


class NatsCluster:
    """Three JetStream nodes routed to each other, for fault tests."""

    def __init__(self, size: int = 3) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="nats-cluster-")
        cluster_ports = [free_port() for _ in range(size)]
        routes = [f"nats://127.0.0.1:{p}" for p in cluster_ports]
        passwords = new_passwords()
        self.nodes = [
            NatsServer(
                Path(self._tmp.name) / f"n{i}",
                name=f"n{i}",
                cluster_port=cluster_ports[i],
                routes=[r for j, r in enumerate(routes) if j != i],
                cluster_name="test-cluster",
                passwords=passwords,
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
                and self._peers_current(meta)
            ):
                return str(meta["leader"])
        return None

    def _peers_current(self, meta: dict[str, Any]) -> bool:
        """Whether every other peer is online and caught up with the meta leader: until
        then a stream asked for three replicas has "no suitable peers for placement"."""
        replicas = meta.get("replicas") or []
        return len(replicas) == len(self.nodes) - 1 and all(
            r.get("current") and not r.get("offline") for r in replicas
        )

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop()
        with contextlib.suppress(OSError):
            self._tmp.cleanup()
