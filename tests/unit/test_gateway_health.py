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


async def test_unknown_paths_and_methods_get_the_typed_error_body() -> None:
    app = create_app(Readiness(), "gw-test")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        missing = await http.get("/api/nothing-here")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        wrong = await http.put("/healthz")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "bad_request"
        assert "allow" in wrong.headers
        starting = await http.get("/api/calls/c1", headers={"Authorization": "Bearer x"})
        assert starting.status_code == 503  # no context yet: typed, not a traceback
        assert starting.json()["error"]["code"] == "unavailable"
