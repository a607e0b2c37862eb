"""One trace follows a join through the gateway, the mode selector, the migration command
and the media node (real processes, each writing its spans to its own file)."""

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

TRACES = Path(tempfile.mkdtemp(prefix="traces-"))


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer) -> Iterator[CallStack]:
    tracing = {"OTEL_TRACES_EXPORTER": "file", "OTEL_TRACES_FILE": f"{TRACES}/{{service_id}}.jsonl"}
    calls = CallStack(nats_server.url, gateways=2, env=tracing).start_all()
    yield calls
    calls.stop()


def spans() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in TRACES.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                found[record["span_id"]] = record
    return found


def chain(all_spans: dict[str, dict[str, Any]], span: dict[str, Any]) -> list[dict[str, Any]]:
    """The span and its ancestors, up to the root."""
    path = [span]
    while path[-1].get("parent_id") in all_spans:
        path.append(all_spans[path[-1]["parent_id"]])
    return path


async def test_a_join_traces_through_gateway_selector_and_media_node(
    stack: CallStack, uid: str, clients: list[CallClient]
) -> None:
    users = [f"u{i}-{uid}" for i in range(3)]
    stack.put_conversation(f"tr-{uid}", "GROUP", users)
    a, b, c = [
        await CallClient.connect(stack.urls[i % 2], stack.token(u), name=u, heartbeats=True)
        for i, u in enumerate(users)
    ]
    clients += [a, b, c]
    call_id = (await a.initiate(f"tr-{uid}"))["call"]["callId"]
    await b.accept(call_id)
    t = time.monotonic()
    await a.wait_everyone(t, "p2p")
    await c.join(call_id)
    for x in (a, b, c):
        await x.wait_mode("sfu")

    def traced_through_everyone() -> list[dict[str, Any]] | None:
        every = spans()
        for span in every.values():
            where = span["attributes"].get("messaging.destination.name", "")
            if span["service"] != "media_node" or not where.endswith(".open_session"):
                continue
            path = chain(every, span)
            services = [s["service"] for s in path]
            if "selector" in services and path[-1]["service"] == "gateway":
                return path
        return None

    await eventually(lambda: traced_through_everyone() is not None, 20, step=0.2)
    path = traced_through_everyone()
    assert path is not None
    assert len({s["trace_id"] for s in path}) == 1
    services = [s["service"] for s in reversed(path)]
    # gateway (the join) -> selector (the decision) -> gateway (the command) -> media node.
    assert services[0] == "gateway" and services[-1] == "media_node"
    first_selector = services.index("selector")
    assert "gateway" in services[first_selector:]
    assert path[-1]["name"].startswith("socket call:")
