"""Property-based: random and mutated payloads on every Socket.IO event of a real gateway.

Two people are in a GROUP call; one of them sends every client event with payloads
hypothesis makes up (random JSON, and realistic shapes with mutated fields: the real call
and participant ids, junk, half an emoji, huge numbers). Every event is answered with an
acknowledgement that is either ``ok`` or a typed error (never ``internal``), the socket
stays open, the gateway stays up, and the call is unchanged where the event should not
change it: still active, both people still in it and connected.
"""

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.call_client import CallClient
from tests.support.gateways import GatewayCluster
from tests.support.nats_server import NatsServer

#: Every client event the gateway handles (docs/socket-protocol.md), and names it does not.
EVENTS = [
    "call:initiate",
    "call:accept",
    "call:join",
    "call:decline",
    "call:leave",
    "call:end",
    "call:toggle-audio",
    "call:toggle-video",
    "call:heartbeat",
    "call:request-ice-servers",
    "call:refresh-token",
    "call:signal",
    "call:media-health",
    "call:mode-switched",
    "call:sfu-publish",
    "call:sfu-downlink",
    "call:sfu-downlink-answer",
    "call:sfu-preferences",
    "call:no-such-event",
    "connect",
    "disconnect",
]
#: Events that end or leave the call when sent right: fuzzed with other calls' ids only.
DESTRUCTIVE = {"call:decline", "call:leave", "call:end"}
TYPED = {
    "unauthorized",
    "forbidden",
    "not_found",
    "bad_request",
    "conflict",
    "call_ended",
    "not_in_call",
    "rate_limited",
    "unknown_event",
    "unavailable",
    "too_large",
}
HALF_EMOJI = "\ud83d"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.just(HALF_EMOJI)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)
FIELDS = [
    "callId",
    "conversationId",
    "participantId",
    "to",
    "type",
    "sdp",
    "candidate",
    "enabled",
    "media",
    "resumeToken",
    "token",
    "state",
    "peerId",
    "reason",
    "epoch",
    "sessionId",
    "pinned",
    "videoTiles",
]


@pytest.fixture(scope="module")
def cluster(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    limits = {"RATE_DEFAULT_PER_S": "1000", "RATE_DEFAULT_BURST": "1000"}
    limits |= {"RATE_SIGNAL_PER_S": "1000", "RATE_HEARTBEAT_PER_S": "1000"}
    limits |= {"RATE_HEARTBEAT_BURST": "1000", "RATE_INITIATE_BURST": "1000"}
    # The sockets' loop runs only while an event is in flight: no heartbeat deadline.
    limits |= {"CALL_HEARTBEAT_TIMEOUT_S": "600"}
    gateways = GatewayCluster(nats_server.url, count=1, env=limits).start()
    yield gateways
    gateways.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_random_payloads_on_every_event_get_typed_answers_and_change_nothing(
    cluster: GatewayCluster, uid: str
) -> None:
    # Hypothesis drives a synchronous test; the sockets live on this test's own loop.
    loop = asyncio.new_event_loop()
    try:
        _fuzz(loop, cluster, uid)
    finally:
        loop.close()


def _fuzz(loop: asyncio.AbstractEventLoop, cluster: GatewayCluster, uid: str) -> None:
    host, member, conv = f"host-{uid}", f"m-{uid}", f"grp-{uid}"
    cluster.put_conversation(conv, "GROUP", [host, member])
    host_token = cluster.token(host)
    url = cluster.urls[0]

    async def setup() -> tuple[CallClient, CallClient, str]:
        a = await CallClient.connect(url, host_token, name="a", media=False, heartbeats=False)
        m = await CallClient.connect(
            url, cluster.token(member), name="m", media=False, heartbeats=False
        )
        call_id = str((await a.initiate(conv))["call"]["callId"])
        await m.join(call_id)
        return a, m, call_id

    a, m, call_id = loop.run_until_complete(setup())
    ids = st.sampled_from([call_id, a.participant_id or "", m.participant_id or "", f"x-{uid}"])
    value = json_values | ids

    def payloads(event: str) -> st.SearchStrategy[Any]:
        fields = st.dictionaries(st.sampled_from(FIELDS), value, max_size=6)
        if event in DESTRUCTIVE:  # other calls only: sent right, these would end this one
            fields = fields.map(lambda d: {**d, "callId": f"other-{uid}"})
        return json_values | fields

    answers: list[tuple[str, Any]] = []
    try:
        for event in EVENTS:
            _fuzz_event(loop, m, event, payloads(event), answers)

        async def after() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=url) as http:
                view = await http.get(
                    f"/api/calls/{call_id}", headers={"Authorization": f"Bearer {host_token}"}
                )
                result: dict[str, Any] = view.json()
                return result

        view = loop.run_until_complete(after())
        assert view["status"] == "active", view
        present = {p["participantId"]: p for p in view["participants"]}
        assert {a.participant_id, m.participant_id} <= set(present)
        for pid in (a.participant_id, m.participant_id):
            assert present[pid]["connection"] == "connected", present[pid]
        assert len(answers) >= 5 * len(EVENTS)
        assert cluster.gateways[0].process.poll() is None  # the gateway is still up
        assert "Traceback" not in cluster.gateways[0].log_text()
    finally:

        async def close() -> None:
            await asyncio.gather(a.close(), m.close())

        loop.run_until_complete(close())


def _fuzz_event(
    loop: asyncio.AbstractEventLoop,
    client: CallClient,
    event: str,
    payloads: st.SearchStrategy[Any],
    answers: list[tuple[str, Any]],
) -> None:
    @given(payload=payloads)
    @settings(
        max_examples=10,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def send(payload: Any) -> None:
        ack = loop.run_until_complete(client.request(event, payload, timeout=10))
        answers.append((event, ack))
        assert isinstance(ack.get("ok"), bool), (event, ack)
        if not ack["ok"]:
            assert ack["error"]["code"] in TYPED, (event, payload, ack)
        assert client.sio.connected, (event, payload)

    send()
