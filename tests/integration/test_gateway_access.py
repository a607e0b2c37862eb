"""The access matrix and the review's gaps, against real gateway processes.

Who may start, join, remove, end, create or revoke a share link: members by role,
non-members, guests, expired and revoked tokens. Live sockets keep their right to be there
(an expired token is shown out with a reason, a revoked guest removed from the call), ICE
credentials are scoped to a call the caller is in, signals never reach outside the call,
reserved Socket.IO event names never run the server's own handlers, and one person holds a
bounded number of sockets.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
import socketio

from tests.support.call_client import CallClient
from tests.support.gateways import JWT_SECRET, OPERATOR_TOKEN, TURN_SECRET, GatewayCluster
from tests.support.nats_server import NatsServer
from tests.support.waiting import eventually

MAX_SOCKETS = 3


@pytest.fixture(scope="module")
def cluster(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    gateways = GatewayCluster(
        nats_server.url,
        count=1,
        env={
            "SOCKET_AUTH_CHECK_INTERVAL_S": "0.2",
            "MAX_SOCKETS_PER_PRINCIPAL": str(MAX_SOCKETS),
            # Every socket of this module comes from 127.0.0.1: room for all of them.
            "RATE_CONNECT_BURST": "500",
        },
    ).start()
    yield gateways
    gateways.stop()


@pytest.fixture
async def http(cluster: GatewayCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.urls[0]) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user_token(user_id: str, exp: float) -> str:
    claims = {"sub": user_id, "iss": "meeshy", "aud": "meeshy-calls", "exp": int(exp)}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def test_the_access_matrix_over_rest(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str
) -> None:
    host, member, mod, outsider = (f"{r}-{uid}" for r in ("host", "member", "mod", "out"))
    conv = f"grp-{uid}"
    cluster.put_conversation(conv, "GROUP", [host, member, mod], roles={mod: "moderator"})
    t = {who: cluster.token(who) for who in (host, member, mod, outsider)}

    # Start: members only.
    assert (
        await http.post("/api/calls", json={"conversationId": conv}, headers=bearer(t[outsider]))
    ).status_code == 403
    started = await http.post("/api/calls", json={"conversationId": conv}, headers=bearer(t[host]))
    assert started.status_code == 201, started.text
    call_id = started.json()["call"]["callId"]
    # Join: members, never an outsider; an outsider cannot even see the call.
    assert (
        await http.post(f"/api/calls/{call_id}/participants", headers=bearer(t[outsider]))
    ).status_code == 403
    assert (await http.get(f"/api/calls/{call_id}", headers=bearer(t[outsider]))).status_code in (
        403,
        404,
    )
    joined = await http.post(f"/api/calls/{call_id}/participants", headers=bearer(t[member]))
    assert joined.status_code == 201
    member_pid = joined.json()["participantId"]
    mod_pid = (
        await http.post(f"/api/calls/{call_id}/participants", headers=bearer(t[mod]))
    ).json()["participantId"]
    # Remove someone else: the initiator or a moderator; a plain member may not.
    refused = await http.delete(
        f"/api/calls/{call_id}/participants/{mod_pid}", headers=bearer(t[member])
    )
    assert refused.status_code == 403
    removed = await http.delete(
        f"/api/calls/{call_id}/participants/{member_pid}", headers=bearer(t[mod])
    )
    assert removed.status_code == 200, removed.text
    # Share links: members create; a plain member may not revoke the host's link.
    link = await http.post(
        f"/api/conversations/{conv}/share-links", json={}, headers=bearer(t[host])
    )
    assert link.status_code == 201
    outsider_link = await http.post(
        f"/api/conversations/{conv}/share-links", json={}, headers=bearer(t[outsider])
    )
    assert outsider_link.status_code == 403
    link_id = link.json()["linkId"]
    assert (
        await http.delete(f"/api/share-links/{link_id}", headers=bearer(t[member]))
    ).status_code == 403
    # A guest may join but not end, nor create links.
    guest = (
        await http.post("/api/guests", json={"link": link.json()["token"], "displayName": "G"})
    ).json()["token"]
    assert (
        await http.post(f"/api/calls/{call_id}/participants", headers=bearer(guest))
    ).status_code == 201
    assert (await http.delete(f"/api/calls/{call_id}", headers=bearer(guest))).status_code == 403
    assert (
        await http.post(f"/api/conversations/{conv}/share-links", json={}, headers=bearer(guest))
    ).status_code == 403
    # End: a plain member may not; an expired or forged token is a 401.
    assert (
        await http.delete(f"/api/calls/{call_id}", headers=bearer(t[member]))
    ).status_code == 403
    expired = user_token(host, time.time() - 3600)
    assert (await http.delete(f"/api/calls/{call_id}", headers=bearer(expired))).status_code == 401
    forged = jwt.encode(
        {"sub": host, "iss": "meeshy", "aud": "meeshy-calls", "exp": int(time.time()) + 60},
        "another-secret-another-secret-another",
        algorithm="HS256",
    )
    assert (await http.delete(f"/api/calls/{call_id}", headers=bearer(forged))).status_code == 401
    # Revoked: the guest's token no longer works, the moderator revokes, the host ends.
    assert (
        await http.delete(f"/api/share-links/{link_id}", headers=bearer(t[mod]))
    ).status_code == 204
    late = await http.post(f"/api/calls/{call_id}/participants", headers=bearer(guest))
    assert late.status_code == 403
    assert (await http.delete(f"/api/calls/{call_id}", headers=bearer(t[host]))).status_code == 200


async def test_revoking_a_link_removes_its_admitted_guest_from_the_call(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str
) -> None:
    host, conv = f"host-{uid}", f"grp-{uid}"
    cluster.put_conversation(conv, "GROUP", [host])
    host_token = cluster.token(host)
    link = await http.post(
        f"/api/conversations/{conv}/share-links", json={}, headers=bearer(host_token)
    )
    guest_token = (
        await http.post("/api/guests", json={"link": link.json()["token"], "displayName": "G"})
    ).json()["token"]
    a = await CallClient.connect(cluster.urls[0], host_token, name="host", media=False)
    g = await CallClient.connect(cluster.urls[0], guest_token, name="guest", media=False)
    try:
        call_id = (await a.initiate(conv))["call"]["callId"]
        guest_pid = (await g.join(call_id))["participantId"]
        gone = await http.delete(
            f"/api/share-links/{link.json()['linkId']}", headers=bearer(host_token)
        )
        assert gone.status_code == 204
        left = await a.wait_for("call:participant-left", lambda p: p["participantId"] == guest_pid)
        assert left["reason"] == "removed"
        told = await g.wait_for("call:error", lambda p: p.get("event") == "auth")
        assert told["code"] == "forbidden"
        await eventually(lambda: not g.sio.connected, 10)
        view = (await http.get(f"/api/calls/{call_id}", headers=bearer(host_token))).json()
        assert guest_pid not in {p["participantId"] for p in view["participants"]}
    finally:
        await asyncio.gather(a.close(), g.close())


async def test_an_expired_token_is_shown_out_of_its_live_socket(
    cluster: GatewayCluster, uid: str
) -> None:
    # Accepted within the verifier's leeway, expired moments later.
    short = user_token(f"u-{uid}", time.time() - 2)
    c = await CallClient.connect(cluster.urls[0], short, name="short", media=False)
    try:
        told = await c.wait_for("call:error", lambda p: p.get("event") == "auth", timeout=20)
        assert told["code"] == "unauthorized" and "expired" in told["message"]
        await eventually(lambda: not c.sio.connected, 10)
    finally:
        await c.close()


async def test_a_refreshed_token_keeps_the_socket(cluster: GatewayCluster, uid: str) -> None:
    who = f"u-{uid}"
    c = await CallClient.connect(
        cluster.urls[0], user_token(who, time.time() + 30), name="c", media=False
    )
    try:
        fresh = user_token(who, time.time() + 3600)
        ack = await c.request("call:refresh-token", {"token": fresh})
        assert ack["ok"] and ack["expiresAt"] > time.time() + 3000
        other = await c.request(
            "call:refresh-token", {"token": user_token(f"x-{uid}", time.time() + 3600)}
        )
        assert other["error"]["code"] == "forbidden"
        assert c.sio.connected
    finally:
        await c.close()


async def test_ice_servers_only_for_a_call_the_socket_is_in(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str
) -> None:
    host, conv, other = f"host-{uid}", f"grp-{uid}", f"other-{uid}"
    cluster.put_conversation(conv, "GROUP", [host])
    cluster.put_conversation(f"o-{uid}", "GROUP", [other])
    a = await CallClient.connect(cluster.urls[0], cluster.token(host), name="a", media=False)
    b = await CallClient.connect(cluster.urls[0], cluster.token(other), name="b", media=False)
    try:
        started = await a.initiate(conv)
        call_id = started["call"]["callId"]
        missing = await a.request("call:request-ice-servers", {})
        assert missing["error"]["code"] == "bad_request"
        theirs = await b.request("call:request-ice-servers", {"callId": call_id})
        assert theirs["error"]["code"] == "not_in_call"
        mine = await a.request("call:request-ice-servers", {"callId": call_id})
        assert mine["ok"] and mine["ttlS"] <= 600
        turn = next(s for s in mine["iceServers"] if "username" in s)
        assert turn["username"].endswith(f":{call_id}.{started['participantId']}")
        # Over REST too, for a call you are in only.
        rest = await http.get(
            "/api/ice-servers", params={"callId": call_id}, headers=bearer(cluster.token(other))
        )
        assert rest.status_code in (403, 404, 409)
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_signals_never_reach_anyone_outside_the_call(
    cluster: GatewayCluster, uid: str
) -> None:
    host, member, outsider = f"host-{uid}", f"m-{uid}", f"out-{uid}"
    cluster.put_conversation(f"grp-{uid}", "GROUP", [host, member])
    cluster.put_conversation(f"o-{uid}", "GROUP", [outsider])
    a = await CallClient.connect(cluster.urls[0], cluster.token(host), name="a", media=False)
    m = await CallClient.connect(cluster.urls[0], cluster.token(member), name="m", media=False)
    o = await CallClient.connect(cluster.urls[0], cluster.token(outsider), name="o", media=False)
    try:
        call_id = (await a.initiate(f"grp-{uid}"))["call"]["callId"]
        await m.join(call_id)
        await o.initiate(f"o-{uid}")
        sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        # The outsider names a participant of a call it is not in: refused.
        refused = await o.request(
            "call:signal",
            {"callId": call_id, "to": a.participant_id, "type": "offer", "sdp": sdp},
        )
        assert refused["ok"] is False
        # Nor can a participant address someone in another call from its own.
        cross = await m.request(
            "call:signal",
            {"callId": call_id, "to": o.participant_id, "type": "offer", "sdp": sdp},
        )
        assert cross["ok"] is False
        # A signal inside the call arrives; the ones refused before it never did.
        assert (await m.signal(a.participant_id or "", "offer", sdp=sdp))["ok"] is True
        got = await a.wait_for("call:signal", lambda s: s["from"] == m.participant_id)
        assert got["callId"] == call_id
        assert [s for s in a.seen("call:signal") if s["from"] != m.participant_id] == []
        assert o.seen("call:signal") == []
    finally:
        await asyncio.gather(a.close(), m.close(), o.close())


@pytest.mark.parametrize("name", ["disconnect", "connect", "disconnecting", "message"])
async def test_reserved_event_names_are_refused_and_change_nothing(
    cluster: GatewayCluster, http: httpx.AsyncClient, uid: str, name: str
) -> None:
    host = f"host-{uid}"
    cluster.put_conversation(f"grp-{uid}", "GROUP", [host])
    token = cluster.token(host)
    a = await CallClient.connect(cluster.urls[0], token, name="a", media=False)
    try:
        call_id = (await a.initiate(f"grp-{uid}"))["call"]["callId"]
        ack = await a.request(name, {"callId": call_id})
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
        # The socket still works and is still bound: its participant is still connected.
        beat = await a.request("call:heartbeat", {"callId": call_id})
        assert beat["ok"] is True
        view = (await http.get(f"/api/calls/{call_id}", headers=bearer(token))).json()
        me = next(p for p in view["participants"] if p["participantId"] == a.participant_id)
        assert me["connection"] == "connected"
    finally:
        await a.close()


async def test_one_person_holds_a_bounded_number_of_sockets(
    cluster: GatewayCluster, uid: str
) -> None:
    token = cluster.token(f"many-{uid}")
    held = [
        await CallClient.connect(cluster.urls[0], token, name=f"s{i}", media=False)
        for i in range(MAX_SOCKETS)
    ]
    try:
        extra = CallClient(cluster.urls[0], token, name="one-too-many", media=False)
        try:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await extra.open()
        finally:
            await extra.close()
        # Closing one frees its place.
        await held.pop().close()

        async def reconnects() -> bool:
            again = CallClient(cluster.urls[0], token, name="again", media=False)
            try:
                await again.open()
            except socketio.exceptions.ConnectionError:
                await again.close()
                return False
            held.append(again)
            return True

        await eventually(reconnects, 10, step=0.1)
    finally:
        await asyncio.gather(*(c.close() for c in held))


def test_secrets_never_reach_the_logs(cluster: GatewayCluster, nats_server: NatsServer) -> None:
    """After everything above (refusals, expiries, revocations): the gateway's log holds
    none of its secrets."""
    text = "".join(g.log_text() for g in cluster.gateways)
    assert "socket.session_ended" in text  # the log is the one the tests above wrote
    _, nats_password = nats_server.credentials("gateway")
    for secret in (JWT_SECRET, TURN_SECRET, OPERATOR_TOKEN, nats_password):
        assert secret not in text


async def test_the_guest_redeem_limit_keys_on_the_client_behind_a_trusted_proxy(
    nats_server: NatsServer,
) -> None:
    # The test client is the "proxy" (127.0.0.1); X-Forwarded-For names the clients.
    env = {"TRUSTED_PROXIES": "127.0.0.1", "RATE_DEFAULT_BURST": "3"}
    env |= {"RATE_DEFAULT_PER_S": "0.01", "RATE_CONNECT_BURST": "2", "RATE_CONNECT_PER_S": "0.01"}
    proxy = GatewayCluster(nats_server.url, count=1, env=env).start()
    try:
        async with httpx.AsyncClient(base_url=proxy.urls[0]) as http:

            async def redeem(client: str) -> int:
                body = {"link": "not-a-link", "displayName": "G"}
                headers = {"X-Forwarded-For": f"{client}, 127.0.0.1"}
                return (await http.post("/api/guests", json=body, headers=headers)).status_code

            first = [await redeem("203.0.113.7") for _ in range(3)]
            assert first == [401, 401, 401]  # a bad link, refused on its merits
            assert await redeem("203.0.113.7") == 429  # this client's bucket is empty
            assert await redeem("198.51.100.9") == 401  # another client behind the proxy

        # Socket connects too, counted before the token is read: guessing tokens is as
        # slow as connecting.
        async def connect(token: str, client: str) -> str:
            sio = socketio.AsyncClient(reconnection=False)
            refusals: list[Any] = []
            sio.on("connect_error", refusals.append)
            try:
                await sio.connect(
                    proxy.urls[0],
                    auth={"token": token},
                    headers={"X-Forwarded-For": client},
                    transports=["websocket"],
                    wait_timeout=10,
                )
            except socketio.exceptions.ConnectionError:
                return str(refusals[0]["data"]["code"]) if refusals else "refused"
            finally:
                await sio.disconnect()
            return "ok"

        good = proxy.token("connector")
        assert [await connect(good, "203.0.113.7") for _ in range(2)] == ["ok", "ok"]
        assert await connect("guess", "203.0.113.7") == "rate_limited"
        assert await connect("guess", "198.51.100.9") == "unauthorized"
    finally:
        proxy.stop()


async def test_sockets_from_other_sites_are_refused_by_default(
    cluster: GatewayCluster, uid: str
) -> None:
    token = cluster.token(f"web-{uid}")
    url = cluster.urls[0]

    async def connect(origin: str) -> bool:
        sio = socketio.AsyncClient(reconnection=False)
        try:
            await sio.connect(
                url,
                auth={"token": token},
                headers={"Origin": origin},
                transports=["websocket"],
                wait_timeout=10,
            )
        except socketio.exceptions.ConnectionError:
            return False
        finally:
            await sio.disconnect()
        return True

    assert not await connect("https://evil.test")
    assert await connect(url)  # the web client, served by the gateway itself
