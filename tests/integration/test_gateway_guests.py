"""Guests: share links to GROUP conversations, guest tokens scoped to one conversation."""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.call_client import CallClient
from tests.support.gateways import GatewayCluster
from tests.support.nats_server import NatsServer


@pytest.fixture(scope="module")
def cluster(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    gateways = GatewayCluster(nats_server.url, count=2).start()
    yield gateways
    gateways.stop()


@pytest.fixture
async def http(cluster: GatewayCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.urls[1]) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_guest_joins_a_group_call_by_link(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str
) -> None:
    host, conv = f"host-{uid}", f"grp-{uid}"
    cluster.put_conversation(conv, "GROUP", [host, f"other-{uid}"])
    host_token = cluster.token(host)
    link = await http.post(
        f"/api/conversations/{conv}/share-links", json={"maxUses": 2}, headers=bearer(host_token)
    )
    assert link.status_code == 201, link.text
    redeemed = await http.post(
        "/api/guests",
        json={"link": link.json()["token"], "displayName": "Gus", "language": "pt-BR"},
    )
    assert redeemed.status_code == 201, redeemed.text
    guest_token = redeemed.json()["token"]
    assert redeemed.json()["conversationId"] == conv

    a = await CallClient.connect(cluster.urls[0], host_token, name="host", media=False)
    g = await CallClient.connect(cluster.urls[1], guest_token, name="guest", media=False)
    try:
        call_id = (await a.initiate(conv))["call"]["callId"]
        active = await http.get(
            f"/api/conversations/{conv}/active-call", headers=bearer(guest_token)
        )
        assert active.json()["callId"] == call_id
        ack = await g.join(call_id)
        me = next(
            p for p in ack["call"]["participants"] if p["participantId"] == ack["participantId"]
        )
        assert me["kind"] == "guest" and me["displayName"] == "Gus" and me["language"] == "pt-br"
        joined = await a.wait_for("call:participant-joined")
        assert joined["participant"]["kind"] == "guest"
        # The guest may signal the host, but may not start calls.
        sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        assert (await g.signal(a.participant_id or "", "offer", sdp=sdp))["ok"] is True
        await a.wait_for("call:signal", lambda s: s["from"] == g.participant_id)
        refused = await g.request("call:initiate", {"conversationId": conv})
        assert refused["error"]["code"] == "forbidden"
    finally:
        await asyncio.gather(a.close(), g.close())


async def test_a_guest_language_must_be_one_captions_can_be_shown_in(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str
) -> None:
    host, conv = f"host-{uid}", f"grp-{uid}"
    cluster.put_conversation(conv, "GROUP", [host])
    link = await http.post(
        f"/api/conversations/{conv}/share-links", json={}, headers=bearer(cluster.token(host))
    )
    redeem = {"link": link.json()["token"], "displayName": "Gus"}
    refused = await http.post("/api/guests", json={**redeem, "language": "xx"})
    assert refused.status_code == 422 and "unknown language" in refused.text
    # Esperanto is read (a translator writes it) though nobody is transcribed in it: the
    # guest is admitted, and reads it while speaking the default (the state machine).
    admitted = await http.post("/api/guests", json={**redeem, "language": "eo"})
    assert admitted.status_code == 201, admitted.text


async def test_guest_token_is_scoped_to_its_conversation(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str
) -> None:
    host = f"host-{uid}"
    cluster.put_conversation(f"g1-{uid}", "GROUP", [host])
    cluster.put_conversation(f"g2-{uid}", "GROUP", [host])
    link = await http.post(
        f"/api/conversations/g1-{uid}/share-links", json={}, headers=bearer(cluster.token(host))
    )
    guest = (
        await http.post("/api/guests", json={"link": link.json()["token"], "displayName": "G"})
    ).json()["token"]
    call = await http.post(
        "/api/calls", json={"conversationId": f"g2-{uid}"}, headers=bearer(cluster.token(host))
    )
    call_id = call.json()["call"]["callId"]
    joined = await http.post(f"/api/calls/{call_id}/participants", headers=bearer(guest))
    assert joined.status_code == 403
    assert (await http.get(f"/api/calls/{call_id}", headers=bearer(guest))).status_code == 404
    links = await http.post(
        f"/api/conversations/g1-{uid}/share-links", json={}, headers=bearer(guest)
    )
    assert links.status_code == 403


async def test_links_refused_for_direct_expired_revoked_and_used_up(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str
) -> None:
    host = f"host-{uid}"
    token = cluster.token(host)
    cluster.put_conversation(f"dm-{uid}", "DIRECT", [host, f"peer-{uid}"])
    cluster.put_conversation(f"grp-{uid}", "GROUP", [host])

    direct = await http.post(
        f"/api/conversations/dm-{uid}/share-links", json={}, headers=bearer(token)
    )
    assert direct.status_code == 403
    assert "DIRECT" in direct.json()["error"]["message"]

    async def redeem(link_token: str) -> httpx.Response:
        return await http.post("/api/guests", json={"link": link_token, "displayName": "G"})

    short = await http.post(
        f"/api/conversations/grp-{uid}/share-links", json={"ttlS": 0.3}, headers=bearer(token)
    )
    expires_at = short.json()["expiresAt"]
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.05)  # a deadline, not a guess
    expired = await redeem(short.json()["token"])
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]

    revocable = await http.post(
        f"/api/conversations/grp-{uid}/share-links", json={}, headers=bearer(token)
    )
    admitted = await redeem(revocable.json()["token"])
    assert admitted.status_code == 201
    call = await http.post(
        "/api/calls", json={"conversationId": f"grp-{uid}"}, headers=bearer(token)
    )
    call_id = call.json()["call"]["callId"]
    gone = await http.delete(
        f"/api/share-links/{revocable.json()['linkId']}", headers=bearer(token)
    )
    assert gone.status_code == 204
    revoked = await redeem(revocable.json()["token"])
    assert revoked.status_code == 403 and "revoked" in revoked.json()["error"]["message"]
    # The guest who came through the revoked link is shut out too.
    late = await http.post(
        f"/api/calls/{call_id}/participants", headers=bearer(admitted.json()["token"])
    )
    assert late.status_code == 403 and "revoked" in late.json()["error"]["message"]
    await http.delete(f"/api/calls/{call_id}", headers=bearer(token))

    once = await http.post(
        f"/api/conversations/grp-{uid}/share-links", json={"maxUses": 1}, headers=bearer(token)
    )
    results = await asyncio.gather(*(redeem(once.json()["token"]) for _ in range(4)))
    assert sorted(r.status_code for r in results) == [201, 403, 403, 403]

    forged = once.json()["token"][:-4] + "AAAA"
    assert (await redeem(forged)).status_code == 401
    bad_name = await http.post(
        "/api/guests", json={"link": once.json()["token"], "displayName": ""}
    )
    assert bad_name.status_code == 422
