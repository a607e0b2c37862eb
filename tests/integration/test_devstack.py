"""`make run` as a user would: every component ready, Ctrl-C stops everything cleanly."""

import asyncio
import os
import sys
from pathlib import Path

import httpx

from tests.support.stack import ROOT, EmbeddedStack


async def test_embedded_stack_comes_up_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    stack = await EmbeddedStack(tmp_path / "run").start()
    try:
        ready = [line.split()[1] for line in stack.lines if line.strip().startswith("ok")]
        assert ready == [
            "nats",
            "mongodb",
            "gateway",
            "selector",
            "media-node",
            "transcriber",
            "apertium",
            "translator-bridge",
            "archive",
        ]
        metrics = [
            line.split("metrics: ")[1].split()[0] for line in stack.lines if "metrics: " in line
        ]
        assert len(metrics) == 6  # every service serves /metrics
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{stack.gateway_url}/readyz")).status_code == 200
            for url in metrics:
                assert "meeshy_service_info" in (await http.get(url)).text
    except BaseException:
        await stack.stop()  # a failed check must not leave the stack running
        raise

    code, out = await stack.stop()  # what Ctrl-C sends
    assert code == 0, out
    stopped = [line.split()[1] for line in out.splitlines() if "stopped (exit" in line]
    assert stopped == list(reversed(ready))  # services drain before NATS goes away
    assert all("(exit 0)" in line for line in out.splitlines() if "stopped (exit" in line)
    assert stack.log("gateway").exists()


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
