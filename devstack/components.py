"""The components of the embedded stack, each a process with a readiness check.

Adding a component (a MongoDB wire-protocol server, a translator) means adding one
:class:`Component` to :func:`default_components`; the supervisor does the rest.
"""

import asyncio
import json
import os
import secrets
import sys
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from devstack.apertium import APY_ENV, apy_argv
from devstack.binaries import nats_server_path, nx_27017_path
from schemas import permissions, subjects
from schemas.bus import Bus, Incoming
from schemas.heartbeat import ServiceHeartbeat
from schemas.secret_policy import DEV_JWT_SECRET, DEV_OPERATOR_TOKEN

DEV_SEED_CONVERSATIONS = json.dumps(
    [
        {
            "conversation_id": "demo-direct",
            "type": "DIRECT",
            "members": [{"user_id": "alice"}, {"user_id": "bob"}],
            "title": "Alice and Bob",
        },
        {
            "conversation_id": "demo-group",
            "type": "GROUP",
            "members": [
                {"user_id": "alice", "role": "admin"},
                {"user_id": "bob"},
                {"user_id": "carol"},
                {"user_id": "dave"},
            ],
            "title": "Demo group",
        },
    ]
)


class NotReady(RuntimeError):
    """A component did not become ready in time."""


@dataclass
class StackPaths:
    """Project-local folders for data and logs (``.run/``)."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def nats_store(self) -> Path:
        return self.root / "nats"

    @property
    def mongo_data(self) -> Path:
        return self.root / "mongo"


@dataclass
class Component(ABC):
    """One process of the stack."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 60.0

    @abstractmethod
    def argv(self) -> list[str]: ...

    @abstractmethod
    def describe(self) -> str:
        """One line for the operator: where it listens."""

    @abstractmethod
    async def wait_ready(self, log_path: Path, bus: Bus | None) -> None:
        """Return once ready; raise :class:`NotReady` on timeout."""


@dataclass
class NatsComponent(Component):
    """A single nats-server with JetStream, data under ``.run/nats``, loopback only.

    Permissions are on (``schemas/permissions.py``): each service connects as the user of
    its role with a password drawn at every start (written, readable by this user only, to
    ``.run/nats-auth.conf``); a connection without credentials is the read-only ``analyst``
    (``meeshy-tap``, ``tools/demo_call.py``), which may publish nothing.
    """

    host: str = "127.0.0.1"
    port: int = 4222
    store: Path = Path(".run/nats")
    passwords: dict[str, str] = field(
        default_factory=lambda: {r: secrets.token_urlsafe(24) for r in permissions.ROLES}
    )

    @property
    def auth_config(self) -> Path:
        return self.store.parent / "nats-auth.conf"

    def argv(self) -> list[str]:
        self.store.parent.mkdir(parents=True, exist_ok=True)
        # Created private, then written: the passwords are never readable by others.
        fd = os.open(self.auth_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as conf:
            conf.write(
                permissions.server_config(self.passwords, no_auth_user=permissions.ANALYST.name)
            )
        os.chmod(self.auth_config, 0o600)
        return [
            nats_server_path(),
            "--jetstream",
            "--store_dir",
            str(self.store),
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--server_name",
            "embedded",
            "--config",
            str(self.auth_config),
        ]

    def credentials(self, role: str) -> dict[str, str]:
        """The environment of a process connecting as ``role``."""
        return {
            "NATS_URL": self.url,
            "NATS_USER": permissions.role_for(role).name,
            "NATS_PASSWORD": self.passwords[role],
        }

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def describe(self) -> str:
        return self.url

    async def wait_ready(self, log_path: Path, bus: Bus | None) -> None:
        deadline = asyncio.get_running_loop().time() + self.ready_timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if log_path.exists() and b"Server is ready" in log_path.read_bytes():
                return
            await asyncio.sleep(0.05)
        raise NotReady(f"{self.name}: no 'Server is ready' line within {self.ready_timeout_s:g}s")


@dataclass
class MongoComponent(Component):
    """nx-27017, a MongoDB wire-protocol server on SQLite (the archive's database), loopback
    only, one SQLite file per database under ``.run/mongo``."""

    host: str = "127.0.0.1"
    port: int = 27017
    data: Path = Path(".run/mongo")

    def argv(self) -> list[str]:
        self.data.mkdir(parents=True, exist_ok=True)
        return [
            nx_27017_path(),
            "--data-dir",
            str(self.data),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--pid-file",
            str(self.data / "nx-27017.pid"),
            "--log-file",
            str(self.data / "nx-27017.log"),
        ]

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    def describe(self) -> str:
        return self.url

    async def wait_ready(self, log_path: Path, bus: Bus | None) -> None:
        deadline = asyncio.get_running_loop().time() + self.ready_timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if log_path.exists() and b"Listening on" in log_path.read_bytes():
                return
            await asyncio.sleep(0.05)
        raise NotReady(f"{self.name}: no 'Listening on' line within {self.ready_timeout_s:g}s")


@dataclass
class ApertiumComponent(Component):
    """Apertium APy (Debian), bound to loopback; ready once ``/listPairs`` lists pairs."""

    host: str = "127.0.0.1"
    port: int = 2737

    def argv(self) -> list[str]:
        return apy_argv(self.port, self.host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def describe(self) -> str:
        return self.url

    async def wait_ready(self, log_path: Path, bus: Bus | None) -> None:
        deadline = asyncio.get_running_loop().time() + self.ready_timeout_s

        def pairs() -> int:
            with urllib.request.urlopen(f"{self.url}/listPairs", timeout=1) as resp:
                return len(json.load(resp).get("responseData", []))

        while asyncio.get_running_loop().time() < deadline:
            try:
                if await asyncio.to_thread(pairs) > 0:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise NotReady(f"{self.name}: /listPairs gave no pairs within {self.ready_timeout_s:g}s")


@dataclass
class ServiceComponent(Component):
    """One of our services, ready when its heartbeat says ``ready``."""

    module: str = ""
    kind: str = ""
    service_id: str = ""
    url: str = ""
    #: Filled from the ready heartbeat when the service serves ``/metrics``.
    metrics_url: str = ""

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    def describe(self) -> str:
        where = self.url or self.service_id
        return f"{where}  metrics: {self.metrics_url}" if self.metrics_url else where

    async def wait_ready(self, log_path: Path, bus: Bus | None) -> None:
        assert bus is not None, "services are started after NATS"
        ready = asyncio.Event()

        async def on_beat(beat: ServiceHeartbeat, _: Incoming) -> None:
            if beat.state == "ready":
                port = beat.load.extra.get("metrics_port")
                if port:
                    self.metrics_url = f"http://127.0.0.1:{int(port)}/metrics"
                ready.set()

        sub = await bus.subscribe(
            subjects.service_heartbeat(self.kind, self.service_id), ServiceHeartbeat, on_beat
        )
        try:
            await asyncio.wait_for(ready.wait(), self.ready_timeout_s)
        except TimeoutError:
            raise NotReady(
                f"{self.name}: no 'ready' heartbeat within {self.ready_timeout_s:g}s"
            ) from None
        finally:
            await sub.unsubscribe()


def default_components(paths: StackPaths, environ: dict[str, str] | None = None) -> list[Component]:
    """NATS and MongoDB (nx-27017), then one instance of each service (and Apertium APy
    before the translator bridge), in start order.

    Each service serves ``/metrics`` on ``STACK_METRICS_PORT`` + 1, + 2 ... (9101 ...; with
    ``STACK_METRICS_PORT=0`` each takes a free port and the start-up line shows it).
    """
    env = dict(os.environ if environ is None else environ)
    nats_port = int(env.get("STACK_NATS_PORT", "4222"))
    mongo_port = int(env.get("STACK_MONGO_PORT", "27017"))
    gw_port = int(env.get("GATEWAY_PORT", "8000"))
    apy_port = int(env.get("STACK_APY_PORT", "2737"))
    metrics_base = int(env.get("STACK_METRICS_PORT", "9100"))
    nats = NatsComponent("nats", port=nats_port, store=paths.nats_store)
    mongo = MongoComponent("mongodb", port=mongo_port, data=paths.mongo_data)
    apertium = ApertiumComponent("apertium", env=dict(APY_ENV), port=apy_port)
    common = {"LOG_LEVEL": env.get("LOG_LEVEL", "info")}
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_FILE"):
        if env.get(name):
            common[name] = env[name]
    ordinal = iter(range(1, 100))

    def service(
        name: str, module: str, kind: str, extra: dict[str, str], url: str = ""
    ) -> ServiceComponent:
        service_id = f"{name}-1"
        metrics_port = metrics_base + next(ordinal) if metrics_base else 0
        return ServiceComponent(
            name,
            env={
                **common,
                **nats.credentials(kind),
                "SERVICE_ID": service_id,
                "METRICS_PORT": str(metrics_port),
                **extra,
            },
            module=module,
            kind=kind,
            service_id=service_id,
            url=url,
        )

    return [
        nats,
        mongo,
        service(
            "gateway",
            "gateway",
            "gateway",
            {
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(gw_port),
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{gw_port}",
                # Embedded stack only: log in as a named user, seed conversations.
                "DEV_TOKENS_ENABLED": env.get("DEV_TOKENS_ENABLED", "true"),
                "JWT_SECRET": env.get("JWT_SECRET", DEV_JWT_SECRET),
                "OPERATOR_TOKEN": env.get("OPERATOR_TOKEN", DEV_OPERATOR_TOKEN),
                "SEED_CONVERSATIONS": env.get("SEED_CONVERSATIONS", DEV_SEED_CONVERSATIONS),
                "MONGO_URL": mongo.url,
            },
            url=f"http://127.0.0.1:{gw_port}",
        ),
        service("selector", "gateway.selector", "selector", {}),
        # Loopback only, like every listener of the embedded stack (ICE sockets included).
        service(
            "media-node",
            "media_node",
            "media_node",
            {"MEDIA_NODE_ICE_ADDRESSES": env.get("MEDIA_NODE_ICE_ADDRESSES", "127.0.0.1")},
        ),
        service("transcriber", "transcriber", "transcriber", {}),
        apertium,
        service(
            "translator-bridge",
            "translator_bridge",
            "translator_bridge",
            {"TRANSLATOR_BACKEND": "apertium", "TRANSLATOR_URL": apertium.url},
        ),
        service("archive", "gateway.archive", "archive", {"MONGO_URL": mongo.url}),
    ]
