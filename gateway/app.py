"""The gateway's ASGI application (FastAPI), kept thin: routes call into typed services."""

import msgspec
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from gateway.health import Readiness
from schemas.version import PACKAGE_VERSION


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    version: str
    reasons: list[str] = []


def create_app(readiness: Readiness, service_id: str) -> FastAPI:
    """Build the application around the gateway's live state (injected, not global)."""
    app = FastAPI(title="Meeshy calls gateway", version=PACKAGE_VERSION)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": PACKAGE_VERSION, "service_id": service_id}

    @app.get(
        "/readyz",
        summary="Readiness: connected to NATS, streams provisioned, not draining",
        responses={503: {"description": "not ready, with the reasons"}},
    )
    async def readyz() -> JSONResponse:
        reasons = readiness.reasons_not_ready()
        body = {"status": "ready" if not reasons else "not_ready", "reasons": reasons}
        return JSONResponse(body, status_code=200 if not reasons else 503)

    return app
