"""`make run` as a user would: every component ready, Ctrl-C stops everything cleanly."""

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx

from tests.support.nats_server import free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_embedded_stack_comes_up_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    gw_port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devstack",
        cwd=ROOT,
        env={
            **os.environ,
            "STACK_DIR": str(tmp_path / "run"),
            "STACK_NATS_PORT": str(free_port()),
            "GATEWAY_PORT": str(gw_port),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []

    async def read_until(marker: str) -> None:
        while True:
            raw = await proc.stdout.readline()  # type: ignore[union-attr]
            if not raw:
                raise AssertionError("devstack exited early:\n" + "".join(lines))
            lines.append(raw.decode())
            if marker in lines[-1]:
                return

    await asyncio.wait_for(read_until("All components ready"), 60)
    ready = [line.split()[1] for line in lines if line.strip().startswith("ok")]
    assert ready == ["nats", "gateway", "media-node", "transcriber", "translator-bridge"]
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{gw_port}/readyz")).status_code == 200

    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    rest, _ = await asyncio.wait_for(proc.communicate(), 60)
    out = rest.decode()
    assert proc.returncode == 0, out
    for name in ready:
        assert f"{name}" in out and "stopped (exit 0)" in out
    stopped = [line.split()[1] for line in out.splitlines() if "stopped (exit" in line]
    assert stopped == list(reversed(ready))  # services drain before NATS goes away
    assert all("(exit 0)" in line for line in out.splitlines() if "stopped (exit" in line)
    assert (tmp_path / "run" / "logs" / "gateway.log").exists()


async def test_stack_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "devstack",
            cwd=ROOT,
            env={
                **os.environ,
                "STACK_DIR": str(tmp_path),
                "STACK_NATS_PORT": str(taken.getsockname()[1]),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"already in use" in out
