"""A minimal Socket.IO client for holding thousands of idle sockets (load tests, benchmarks).

python-socketio's ``AsyncClient`` costs a few hundred KB and its own tasks per socket; a
load generator holding 10,000 of them would measure itself. :class:`LightSocket` speaks just
enough of the protocol (Engine.IO 4 over a WebSocket, Socket.IO 5 packets) to be a real,
authenticated, idle client:

- the handshake (``0{...}`` open), the namespace connect with ``auth: {token}`` (``40``),
  and the server's answer: ``40{sid}`` (accepted) or ``44{...}`` (refused, with its reason);
- Socket.IO's heartbeat: every server ping (``2``) is answered with a pong (``3``), so the
  server keeps the socket; pings and pongs are counted;
- events the server pushes (``42[...]``) are counted and the last few kept.

It sends nothing else. Compression is off (signaling messages are small; the gateway
refuses per-message deflate anyway).
"""

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect


class Refused(Exception):
    """The gateway refused the socket (``44``); ``reason`` is its ``{code, message}``."""

    def __init__(self, reason: Any) -> None:
        super().__init__(f"connection refused: {reason}")
        self.reason = reason


@dataclass
class LightStats:
    """What one process's light sockets saw (summed by :func:`total`)."""

    connected: int = 0
    refused: int = 0
    failed: int = 0
    closed: int = 0
    pings: int = 0
    events: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}


@dataclass
class LightSocket:
    """One idle authenticated socket (see the module docstring)."""

    url: str
    token: str
    stats: LightStats = field(default_factory=LightStats)
    sid: str | None = None
    #: Engine.IO's ping interval and timeout the server announced (seconds).
    ping_interval_s: float = 0.0
    last_events: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=4))
    last_ping_at: float = 0.0
    _ws: ClientConnection | None = None
    _reader: asyncio.Task[None] | None = None

    @property
    def ws_url(self) -> str:
        base = self.url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")
        return f"{base}/socket.io/?EIO=4&transport=websocket"

    async def open(self, timeout: float = 30.0) -> None:
        """Connect and authenticate; raises :class:`Refused` or a connection error."""
        ws = await connect(
            self.ws_url,
            compression=None,
            ping_interval=None,  # Socket.IO's own heartbeat runs
            open_timeout=timeout,
            close_timeout=2,
            max_queue=4,
        )
        try:
            async with asyncio.timeout(timeout):
                opened = await ws.recv()
                if not isinstance(opened, str) or not opened.startswith("0"):
                    raise ConnectionError(f"unexpected Engine.IO open packet {opened!r:.80}")
                handshake = json.loads(opened[1:])
                self.ping_interval_s = float(handshake.get("pingInterval", 0)) / 1000
                await ws.send("40" + json.dumps({"token": self.token}))
                while True:
                    packet = await ws.recv()
                    if packet == "2":  # a ping before the connect answer
                        await ws.send("3")
                        continue
                    if isinstance(packet, str) and packet.startswith("40"):
                        self.sid = json.loads(packet[2:] or "{}").get("sid")
                        break
                    if isinstance(packet, str) and packet.startswith("44"):
                        raise Refused(json.loads(packet[2:] or "{}"))
                    raise ConnectionError(f"unexpected packet {packet!r:.80}")
        except BaseException:
            with contextlib.suppress(Exception):
                await ws.close()
            raise
        self._ws = ws
        self.stats.connected += 1
        self._reader = asyncio.get_running_loop().create_task(self._read(ws))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for packet in ws:
                if packet == "2":
                    self.stats.pings += 1
                    self.last_ping_at = time.monotonic()
                    await ws.send("3")
                elif isinstance(packet, str) and packet.startswith("42"):
                    self.stats.events += 1
                    with contextlib.suppress(ValueError):
                        self.last_events.append(json.loads(packet[2:]))
                elif isinstance(packet, str) and packet.startswith("41"):
                    break  # the server disconnected this namespace
        except websockets.ConnectionClosed:
            pass
        finally:
            if self._ws is ws:
                self.stats.closed += 1
                self._ws = None

    @property
    def is_open(self) -> bool:
        return self._ws is not None

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.send("41")
            with contextlib.suppress(Exception):
                await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


async def open_many(
    sockets: list[LightSocket], *, concurrency: int = 64, timeout: float = 30.0
) -> None:
    """Open ``sockets`` with at most ``concurrency`` handshakes in flight; failures are
    counted in each socket's stats (refused or failed), not raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(s: LightSocket) -> None:
        async with gate:
            try:
                await s.open(timeout)
            except Refused:
                s.stats.refused += 1
            except (OSError, TimeoutError, websockets.WebSocketException, ConnectionError):
                s.stats.failed += 1

    await asyncio.gather(*(one(s) for s in sockets))


def total(stats: list[LightStats]) -> LightStats:
    out = LightStats()
    for s in stats:
        for k, v in s.__dict__.items():
            setattr(out, k, getattr(out, k) + v)
    return out
