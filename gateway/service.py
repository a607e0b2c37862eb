"""The gateway service: HTTP (and, later, Socket.IO) in front, the bus behind."""

import asyncio
import contextlib
import socket

import uvicorn

from gateway.app import create_app
from gateway.health import Readiness
from gateway.http_server import EmbeddedServer
from gateway.settings import GatewaySettings
from schemas.bus import Bus
from schemas.logs import get_logger
from schemas.runtime import Service

log = get_logger("gateway")


class GatewayService(Service[GatewaySettings]):
    kind = "gateway"

    def __init__(self, settings: GatewaySettings, service_id: str) -> None:
        super().__init__(settings, service_id)
        self.readiness = Readiness()
        self.app = create_app(self.readiness, service_id)
        self._server: EmbeddedServer | None = None
        self._server_task: asyncio.Task[None] | None = None

    async def start(self, bus: Bus) -> None:
        self.readiness.bus = bus
        self.readiness.provisioned = True  # the runtime provisions before start()
        config = uvicorn.Config(
            self.app,
            host=self.settings.gateway_host,
            port=self.settings.gateway_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws_ping_interval=None,  # Socket.IO's own ping detects dead peers
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=int(self.settings.gateway_graceful_timeout_s),
        )
        # Bind here so a busy port fails start-up with a clear OSError (uvicorn would
        # call sys.exit inside its task instead).
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.settings.gateway_host, self.settings.gateway_port))
        except OSError:
            listener.close()
            log.error(
                "gateway.port_unavailable",
                host=self.settings.gateway_host,
                port=self.settings.gateway_port,
            )
            raise
        listener.listen(2048)
        listener.setblocking(False)
        self._server = EmbeddedServer(config)
        self._server_task = asyncio.create_task(self._server.serve([listener]), name="http")
        while not self._server.started:
            if self._server_task.done():
                raise RuntimeError("http server exited during start-up")
            await asyncio.sleep(0.02)
        log.info(
            "gateway.listening",
            host=self.settings.gateway_host,
            port=self.settings.gateway_port,
        )

    async def stop_accepting(self) -> None:
        await super().stop_accepting()
        self.readiness.draining = True
        if self._server is not None:
            self._server.should_exit = True

    async def wait_idle(self) -> None:
        await super().wait_idle()
        if self._server_task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._server_task

    def load_extra(self) -> dict[str, float]:
        connections = len(self._server.server_state.connections) if self._server else 0
        return {"http_connections": float(connections)}
