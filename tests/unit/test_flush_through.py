"""``flush_through``: once it returns, the server has read what the connection sent before.

The server here is a few lines of NATS protocol on a loopback socket that answers each PING
at once and keeps what it read, so the test sees the order the client wrote in: the PONG
that ended the flush must answer a PING written *after* the subscription. nats-py's own
``flush`` writes its PING ahead of a SUB still in the client's buffer, so it fails this.
"""

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from schemas.bus import flush_through


class PingPongServer:
    """Speaks just enough NATS for a client to connect, subscribe and flush."""

    def __init__(self) -> None:
        self.read = bytearray()
        #: ``len(read)`` at each PING answered: what the server had read when it answered.
        self.answered_at: list[int] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "fake", "version": "2.10.0", "proto": 1, "max_payload": 1 << 20}
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        await writer.drain()
        try:
            while line := await reader.readline():
                self.read += line
                if line == b"PING\r\n":
                    self.answered_at.append(len(self.read))
                    writer.write(b"PONG\r\n")
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[PingPongServer, Client]]:
    server = PingPongServer()
    port = await server.start()
    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
    try:
        yield server, nc
    finally:
        await nc.close()
        await server.stop()


def sub_answered(server: PingPongServer, subject: bytes) -> bool:
    """Whether the SUB for ``subject`` came before the last PING the server answered."""
    at = server.read.find(b"SUB " + subject + b" ")
    return at >= 0 and bool(server.answered_at) and at < server.answered_at[-1]


async def test_the_last_pong_answers_a_ping_written_after_the_subscription(
    fake: tuple[PingPongServer, Client],
) -> None:
    server, nc = fake
    await nc.subscribe("calls.x")
    await flush_through(nc)
    assert sub_answered(server, b"calls.x")


async def test_nats_pys_own_flush_answers_before_the_subscription_is_read(
    fake: tuple[PingPongServer, Client],
) -> None:
    """Why ``flush_through`` exists (skipped, to say so, once a nats-py fixes it: the
    second round trip can then go)."""
    server, nc = fake
    await nc.subscribe("calls.y")
    await nc.flush()
    if sub_answered(server, b"calls.y"):
        pytest.skip("this nats-py's flush waits for the commands before it")
