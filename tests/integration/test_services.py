"""Each service as a real process: start, heartbeat, drain on SIGTERM, exit codes."""

import asyncio
import signal

import httpx
import pytest

from schemas.bus import Bus
from tests.support.nats_server import NatsServer, free_port
from tests.support.processes import HeartbeatWatch, spawn_service

SERVICES = [
    ("gateway", "gateway"),
    ("media_node", "media_node"),
    ("transcriber", "transcriber"),
    ("translator_bridge", "translator_bridge"),
]


@pytest.mark.parametrize(("module", "kind"), SERVICES)
async def test_service_starts_heartbeats_and_drains_on_sigterm(
    bus: Bus, nats_server: NatsServer, uid: str, module: str, kind: str
) -> None:
    service_id = f"{kind.replace('_', '-')}-{uid}"
    watch = await HeartbeatWatch.start(bus, kind, service_id)
    port = free_port()
    proc = await spawn_service(
        module,
        {
            "NATS_URL": nats_server.url,
            "SERVICE_ID": service_id,
            "HEARTBEAT_INTERVAL_S": "0.2",
            "GATEWAY_PORT": str(port),
        },
    )
    ready = await watch.wait_state("ready")
    assert ready.kind == kind and ready.version and ready.load.rss_bytes > 0
    # It keeps beating on its interval while idle.
    await watch.wait(lambda beats: [b.state for b in beats].count("ready") >= 3, 10)

    if kind == "gateway":
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            readyz = await http.get("/readyz")
            assert readyz.status_code == 200 and readyz.json()["status"] == "ready"

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    await watch.wait_state("stopped", timeout=5)
    tail = watch.states[watch.states.index("draining") :]
    assert tail == ["draining", "stopped"]
    _, stderr = await proc.communicate()
    assert b"service.stopped" in stderr
    assert b"Traceback" not in stderr, stderr[stderr.find(b"Traceback") - 300 :][:3000].decode()


async def test_missing_nats_gives_clear_error_and_nonzero_exit() -> None:
    dead_port = free_port()
    proc = await spawn_service(
        "transcriber",
        {
            "NATS_URL": f"nats://svc:pw-secret@127.0.0.1:{dead_port}",
            "NATS_CONNECT_DEADLINE_S": "1.5",
        },
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 3
    text = stderr.decode()
    assert "no NATS server answered" in text and "bus.connect_retry" in text
    assert "pw-secret" not in text  # the URL is shown redacted


async def test_bad_environment_variable_is_named_and_exits_2() -> None:
    proc = await spawn_service("gateway", {"GATEWAY_PORT": "not-a-port"})
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert "GATEWAY_PORT" in stderr.decode() and "Traceback" not in stderr.decode()


async def test_gateway_reports_a_busy_port_instead_of_hanging(
    nats_server: NatsServer, uid: str
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await spawn_service(
            "gateway",
            {"NATS_URL": nats_server.url, "GATEWAY_PORT": str(port), "SERVICE_ID": f"gw-{uid}"},
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert b"service.failed" in stderr
