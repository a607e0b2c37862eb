"""The README's two-person call: ``tools/demo_call.py`` against a real embedded stack.

The stack is started as ``make run`` starts it (``python -m devstack``: NATS, the gateway
with its seed data and dev tokens, the other services), so the demo cannot rot.
"""

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.nats_server import free_port
from tests.support.stack import EmbeddedStack

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tools" / "demo_call.py"


async def _run(*args: str, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DEMO),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[str, str, Path]]:
    """``make run``'s stack on free ports: (gateway URL, NATS URL, gateway log)."""
    running = await EmbeddedStack(tmp_path / "run").start()
    try:
        yield running.gateway_url, running.nats_url, running.log("gateway")
    finally:
        await running.stop()


@pytest.mark.slow
async def test_the_readme_demo_call_works_on_the_embedded_stack(
    stack: tuple[str, str, Path],
) -> None:
    gateway, nats_url, gateway_log = stack
    code, out = await _run("--gateway", gateway, "--nats", nats_url)
    assert code == 0, out
    for step in ("ringing", "accepted", "offer/answer", "media flowing", "mute seen", "hung up"):
        assert f"  ok  {step}" in out, out
    media = next(line for line in out.splitlines() if "media flowing" in line)
    assert "alice received audio=" in media and "bob received audio=" in media
    for event in ("call.initiated", "call.ringing", "media.state_changed", "call.ended"):
        assert event in out, out
    assert "the two-person call worked" in out
    # A second run right after works too (no call left behind in demo-direct).
    code, again = await _run("--gateway", gateway, "--nats", nats_url, "--no-events")
    assert code == 0, again
    assert "Traceback" not in gateway_log.read_text()


async def test_the_demo_says_clearly_when_no_stack_runs() -> None:
    code, out = await _run("--gateway", f"http://127.0.0.1:{free_port()}", timeout=30)
    assert code == 1
    assert "FAILED" in out and "make run" in out
    assert "Traceback" not in out
