"""The gateway's ASGI application (FastAPI), kept thin: routes call into typed services."""

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import static
from gateway.cors import OriginPolicy
from gateway.errors import CallError
from gateway.health import Readiness
from gateway.request_guard import RequestGuard
from gateway.routes import admin, calls, conversations, guests, history
from gateway.settings import GatewaySettings
from schemas import metrics
from schemas.logs import get_logger
from schemas.version import PACKAGE_VERSION

log = get_logger("gateway.http")

HTTP_ERRORS = metrics.counter(
    "gateway_http_errors_total", "Typed refusals answered on REST, by error code.", ("code",)
)


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    version: str
    reasons: list[str] = []


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(
    readiness: Readiness, service_id: str, settings: GatewaySettings | None = None
) -> FastAPI:
    """Build the application around the gateway's live state (injected, not global).

    ``app.state.ctx`` (a :class:`gateway.context.GatewayContext`) is set by the service once
    the bus is up; until then the API answers 503. Every request body passes the
    :class:`~gateway.request_guard.RequestGuard` (size cap, encodable text) first.
    """
    settings = settings or GatewaySettings()
    app = FastAPI(title="Meeshy calls gateway", version=PACKAGE_VERSION)
    app.state.ctx = None
    app.add_middleware(RequestGuard, max_bytes=settings.max_request_bytes)
    OriginPolicy(settings).install(app)  # outermost: refusals carry CORS headers too

    @app.exception_handler(CallError)
    async def call_error(_: Request, exc: CallError) -> JSONResponse:
        HTTP_ERRORS.labels(code=exc.code).inc()
        body = {"error": exc.as_dict()}
        return JSONResponse(body, status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown path (404), wrong method (405)...: the same typed body as every refusal.
        code = {404: "not_found", 405: "bad_request"}.get(exc.status_code, "bad_request")
        if exc.status_code >= 500:
            code = "internal"
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        response = _error(exc.status_code, code, message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()[:5]
        ]
        return _error(422, "bad_request", "; ".join(reasons) or "invalid request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unhandled", path=request.url.path, error=type(exc).__name__)
        return _error(500, "internal", "internal error")

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

    # Before ``calls``: ``/api/calls/history`` must not be read as a call id.
    app.include_router(history.router)
    app.include_router(calls.router)
    app.include_router(guests.router)
    app.include_router(admin.router)
    app.include_router(conversations.router)
    app.include_router(static.router)
    return app
