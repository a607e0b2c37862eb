"""Session-wide real servers, and per-test buses."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from schemas.bus import Bus
from schemas.ids import new_id
from schemas.settings import BusSettings
from tests.support import aioice_race
from tests.support.mongo_server import MongoServer
from tests.support.nats_server import NatsCluster, NatsServer, running_servers

aioice_race.install()

if TYPE_CHECKING:
    from tests.support.call_client import CallClient
    from tests.support.captions import ApyServer


@pytest.fixture(autouse=True)
def no_nats_violations(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test during which a test nats-server refused a service something: each
    service runs as its own NATS user (schemas/permissions.py), and a subject it needs but
    may not use must fail a test, not a user. Tests that provoke refusals on purpose are
    marked ``nats_violations_expected``."""
    before = {id(s): len(s.violations()) for s in running_servers()}
    yield
    if request.node.get_closest_marker("nats_violations_expected"):
        return
    found = [
        line
        for server in running_servers()
        for line in server.violations()[before.get(id(server), 0) :]
    ]
    assert not found, "the NATS server refused a service:\n" + "\n".join(found[:10])


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One real nats-server with JetStream for the whole session."""
    server = NatsServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[NatsCluster]:
    """A real three-node JetStream cluster (started only by tests that ask for it)."""
    cluster = NatsCluster().start()
    yield cluster
    cluster.cleanup()


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    """One real MongoDB wire-protocol server (nx-27017) for the whole session, started by the
    tests that ask for it; each test uses its own database."""
    server = MongoServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def bus_settings(nats_server: NatsServer) -> BusSettings:
    return BusSettings(nats_url=nats_server.url, nats_connect_deadline_s=5)


@pytest.fixture
async def bus(bus_settings: BusSettings) -> AsyncIterator[Bus]:
    """A connected bus with streams provisioned; closed after the test."""
    from schemas.provisioning import provision

    b = await Bus.connect(bus_settings, f"test-{new_id()[:8]}")
    await provision(b.js, bus_settings)
    yield b
    await b.close()


@pytest.fixture
def uid() -> str:
    """A unique id, so each test uses its own subjects and keys."""
    return new_id()[:12]


@pytest.fixture(scope="session")
def apertium() -> Iterator["ApyServer"]:
    """Apertium APy (Debian) on loopback with the pairs bootstrap installs, per session."""
    from tests.support.captions import ApyServer

    server = ApyServer().start()
    yield server
    server.cleanup()


@pytest.fixture
async def clients() -> AsyncIterator[list["CallClient"]]:
    """Test clients a test made (append them here): all closed after the test."""
    made: list[CallClient] = []
    yield made
    await asyncio.gather(*(c.close() for c in made))
