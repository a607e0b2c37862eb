"""The gateway's HTTP probes, in process (no port)."""

import httpx

from gateway.app import create_app
from gateway.health import Readiness


async def test_not_ready_without_nats_and_while_draining() -> None:
    readiness = Readiness()
    app = create_app(readiness, "gw-test")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        assert (await http.get("/healthz")).json()["status"] == "ok"
        resp = await http.get("/readyz")
        assert resp.status_code == 503
        assert set(resp.json()["reasons"]) == {"nats_disconnected", "streams_not_provisioned"}
        readiness.provisioned = True
        readiness.draining = True
        assert "draining" in (await http.get("/readyz")).json()["reasons"]
        assert "/readyz" in (await http.get("/openapi.json")).json()["paths"]
