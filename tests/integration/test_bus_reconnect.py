"""After a server restart the bus runs its reconnect hooks: what the restart lost is back."""

from collections.abc import Iterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.js_retry import retry_transient
from schemas.provisioning import provision
from schemas.settings import BusSettings
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually


@pytest.fixture
def server() -> Iterator[NatsServer]:
    own = NatsServer(name="reconnecting").start()
    yield own
    own.cleanup()


async def test_a_restarted_server_gets_its_memory_stream_back_from_the_reconnect_hook(
    server: NatsServer,
) -> None:
    settings = BusSettings(nats_url=server.url, nats_connect_deadline_s=5)
    bus = await Bus.connect(settings, "reconnect-test")
    runs = 0

    async def reprovision() -> None:
        nonlocal runs
        await retry_transient(
            lambda: provision(bus.js, settings), what="provision", idempotent=True
        )
        runs += 1

    try:
        await provision(bus.js, settings)
        bus.on_reconnect(reprovision)
        server.kill()
        server.start()
        await eventually(lambda: runs >= 1, 20)
        # AUDIO_CHUNKS is memory-stored: only the hook can have made it again.
        info = await bus.js.stream_info(subjects.AUDIO_CHUNKS_STREAM)
        assert info.config.name == subjects.AUDIO_CHUNKS_STREAM
    finally:
        await bus.close()


async def test_a_failing_hook_is_logged_and_does_not_stop_the_others(
    server: NatsServer,
) -> None:
    settings = BusSettings(nats_url=server.url, nats_connect_deadline_s=5)
    bus = await Bus.connect(settings, "reconnect-test-2")
    ran: list[str] = []

    async def broken() -> None:
        ran.append("broken")
        raise RuntimeError("boom")

    async def fine() -> None:
        ran.append("fine")

    try:
        bus.on_reconnect(broken)
        bus.on_reconnect(fine)
        server.kill()
        server.start()
        await eventually(lambda: sorted(ran) == ["broken", "fine"], 20)
        assert bus.nc.is_connected
    finally:
        await bus.close()
