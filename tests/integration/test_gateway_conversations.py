"""``GET /api/conversations``: the signed-in member's conversations with their live calls."""

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.call_client import CallClient
from tests.support.gateways import GatewayCluster
from tests.support.nats_server import NatsServer


@pytest.fixture(scope="module")
def cluster(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    gateways = GatewayCluster(nats_server.url, count=1).start()
    yield gateways
    gateways.stop()


@pytest.fixture
async def http(cluster: GatewayCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.urls[0]) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_member_sees_only_their_conversations_with_role_and_live_call(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str
) -> None:
    me, other, stranger = f"me-{uid}", f"other-{uid}", f"stranger-{uid}"
    cluster.put_conversation(f"d-{uid}", "DIRECT", [me, other])
    cluster.put_conversation(f"g-{uid}", "GROUP", [me, other], roles={me: "moderator"})
    cluster.put_conversation(f"x-{uid}", "GROUP", [other, stranger])
    token = cluster.token(me)

    listed = await http.get("/api/conversations", headers=bearer(token))
    assert listed.status_code == 200, listed.text
    mine = {c["conversationId"]: c for c in listed.json()["conversations"]}
    assert set(mine) == {f"d-{uid}", f"g-{uid}"}
    assert mine[f"g-{uid}"]["myRole"] == "moderator"
    assert mine[f"d-{uid}"]["type"] == "DIRECT"
    assert {m["userId"] for m in mine[f"d-{uid}"]["members"]} == {me, other}
    assert mine[f"g-{uid}"]["activeCall"] is None

    caller = await CallClient.connect(cluster.urls[0], token, name="me", media=False)
    try:
        call_id = (await caller.initiate(f"g-{uid}"))["call"]["callId"]
        live = await http.get("/api/conversations", headers=bearer(token))
        group = next(c for c in live.json()["conversations"] if c["conversationId"] == f"g-{uid}")
        assert group["activeCall"] == {
            "callId": call_id,
            "status": "ringing",
            "participantCount": 1,
        }
        await caller.end()
        after = await http.get("/api/conversations", headers=bearer(token))
        group = next(c for c in after.json()["conversations"] if c["conversationId"] == f"g-{uid}")
        assert group["activeCall"] is None
    finally:
        await caller.close()


async def test_no_list_without_a_token_nor_for_guests(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str
) -> None:
    host = f"host-{uid}"
    cluster.put_conversation(f"g-{uid}", "GROUP", [host])
    anonymous = await http.get("/api/conversations")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    link = await http.post(
        f"/api/conversations/g-{uid}/share-links", json={}, headers=bearer(cluster.token(host))
    )
    guest = await http.post(
        "/api/guests", json={"link": link.json()["token"], "displayName": "Gus"}
    )
    refused = await http.get("/api/conversations", headers=bearer(guest.json()["token"]))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
