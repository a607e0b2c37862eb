"""Signaling rules and bad input against real gateways: every refusal is typed, nothing
breaks the socket, the gateway or the call state."""

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import httpx
import jwt
import pytest
import socketio

from tests.support.call_client import CallClient
from tests.support.gateways import JWT_SECRET, GatewayCluster
from tests.support.nats_server import NatsServer

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


@pytest.fixture(scope="module")
def cluster(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    gateways = GatewayCluster(
        nats_server.url,
        count=2,
        env={"RATE_SIGNAL_PER_S": "20", "RATE_SIGNAL_BURST": "40", "MAX_SDP_BYTES": "4096"},
    ).start()
    yield gateways
    broken = {
        gw.service_id: gw.log_text() for gw in gateways.gateways if "Traceback" in gw.log_text()
    }
    gateways.stop()
    assert not broken, next(iter(broken.values()))[-4000:]


async def _active_call(
    cluster: GatewayCluster, uid: str, clients: list[CallClient], *, group: bool = False
) -> tuple[CallClient, CallClient, str]:
    a_id, b_id, conv = f"a-{uid}", f"b-{uid}", f"c-{uid}"
    members = [a_id, b_id, f"x-{uid}"] if group else [a_id, b_id]
    cluster.put_conversation(conv, "GROUP" if group else "DIRECT", members)
    a = await CallClient.connect(cluster.urls[0], cluster.token(a_id), name="a", media=False)
    b = await CallClient.connect(cluster.urls[1], cluster.token(b_id), name="b", media=False)
    clients += [a, b]
    call_id = (await a.initiate(conv))["call"]["callId"]
    await b.wait_for("call:incoming")
    await b.accept(call_id)
    await a.wait_for("call:participant-joined")
    return a, b, call_id


async def test_signals_are_stamped_and_only_reach_participants(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    a, b, call_id = await _active_call(cluster, uid, clients, group=True)
    assert b.participant_id and a.participant_id
    ack = await a.signal(b.participant_id, "offer", sdp=SDP)
    assert ack == {"ok": True}
    got = await b.wait_for("call:signal")
    assert got["from"] == a.participant_id and got["type"] == "offer" and got["sdp"] == SDP

    forged = await a.signal(b.participant_id, "offer", sdp=SDP, **{"from": b.participant_id})
    assert forged["ok"] is False and forged["error"]["code"] == "forbidden"
    error = await a.wait_for("call:error")
    assert error["code"] == "forbidden" and error["event"] == "call:signal"

    stranger = await a.signal("p-not-in-this-call", "offer", sdp=SDP)
    assert stranger["error"]["code"] == "not_in_call"

    # A member of the conversation who is not in the call cannot signal into it.
    x = await CallClient.connect(cluster.urls[0], cluster.token(f"x-{uid}"), media=False)
    clients.append(x)
    outsider = await x.request(
        "call:signal", {"callId": call_id, "to": b.participant_id, "type": "offer", "sdp": SDP}
    )
    assert outsider["error"]["code"] == "not_in_call"
    assert len(b.seen("call:signal")) == 1


@pytest.mark.parametrize(
    ("event", "data", "code"),
    [
        ("call:signal", "not an object", "bad_request"),
        ("call:signal", None, "bad_request"),
        ("call:signal", ("two", "arguments"), "bad_request"),
        ("call:toggle-video", b"\x00binary", "bad_request"),
        ("call:signal", {"to": "p-x", "type": "offer"}, "bad_request"),
        ("call:signal", {"callId": 42, "to": "p", "type": "offer"}, "bad_request"),
        ("call:signal", {"callId": "a.b", "to": "p", "type": "offer"}, "bad_request"),
        ("call:signal", {"callId": "{call}", "to": "{peer}", "type": "nonsense"}, "bad_request"),
        ("call:signal", {"callId": "{call}", "to": "{peer}", "type": "offer"}, "bad_request"),
        (
            "call:signal",
            {"callId": "{call}", "to": "{peer}", "type": "offer", "sdp": "v=0\r\n" + "a" * 5000},
            "bad_request",
        ),
        (
            "call:signal",
            {"callId": "{call}", "to": "{peer}", "type": "answer", "sdp": "hello"},
            "bad_request",
        ),
        (
            "call:signal",
            {"callId": "{call}", "to": "{peer}", "type": "ice-candidate", "candidate": "x"},
            "bad_request",
        ),
        (
            "call:signal",
            {
                "callId": "{call}",
                "to": "{peer}",
                "type": "ice-candidate",
                "candidate": {"candidate": "rm -rf /", "sdpMLineIndex": 0},
            },
            "bad_request",
        ),
        ("call:toggle-audio", {"callId": "{call}", "enabled": "yes"}, "bad_request"),
        ("call:accept", {"callId": "call-does-not-exist"}, "not_found"),
        ("call:initiate", {"conversationId": "nope-nope"}, "not_found"),
        ("call:heartbeat", {"callId": "call-other"}, "not_in_call"),
        ("call:launch-rockets", {"callId": "{call}"}, "unknown_event"),
    ],
)
async def test_bad_input_gets_a_typed_error_and_breaks_nothing(
    *,
    cluster: GatewayCluster,
    uid: str,
    clients: list[CallClient],
    event: str,
    data: object,
    code: str,
) -> None:
    a, b, call_id = await _active_call(cluster, uid, clients)
    if isinstance(data, dict):
        data = {
            k: (
                v.replace("{call}", call_id).replace("{peer}", b.participant_id or "")
                if isinstance(v, str)
                else v
            )
            for k, v in data.items()
        }
    ack = await a.request(event, data)
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    assert "Traceback" not in json.dumps(ack)
    await a.wait_for("call:error", lambda e: e["code"] == code)
    # The socket still works and the call is intact.
    assert (await a.heartbeat())["ok"] is True
    assert (await a.signal(b.participant_id or "", "offer", sdp=SDP))["ok"] is True
    async with httpx.AsyncClient(base_url=cluster.urls[1]) as http:
        headers = {"Authorization": f"Bearer {cluster.token(f'a-{uid}')}"}
        state = (await http.get(f"/api/calls/{call_id}", headers=headers)).json()
    assert state["status"] == "active" and len(state["participants"]) == 2


async def test_flood_is_rate_limited_and_the_socket_survives(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    a, b, _ = await _active_call(cluster, uid, clients)
    acks = await asyncio.gather(
        *(a.signal(b.participant_id or "", "offer", sdp=SDP) for _ in range(120))
    )
    limited = [x for x in acks if not x["ok"]]
    assert limited and all(x["error"]["code"] == "rate_limited" for x in limited)
    assert sum(1 for x in acks if x["ok"]) >= 40
    assert (await a.heartbeat())["ok"] is True


async def test_bad_tokens_are_refused_at_the_handshake(cluster: GatewayCluster) -> None:
    now = int(time.time())
    base = {"sub": "eve", "iss": "meeshy", "aud": "meeshy-calls", "iat": now}
    cases = {
        "expired": jwt.encode({**base, "exp": now - 60}, JWT_SECRET, algorithm="HS256"),
        "foreign": jwt.encode(
            {**base, "exp": now + 60}, "someone-elses-secret-key-32bytes!", algorithm="HS256"
        ),
        "audience": jwt.encode(
            {**base, "aud": "other", "exp": now + 60}, JWT_SECRET, algorithm="HS256"
        ),
        "garbage": "not.a.jwt",
    }
    for name, token in cases.items():
        sio = socketio.AsyncClient(reconnection=False)
        reasons: list[object] = []
        sio.on("connect_error", reasons.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(cluster.urls[0], auth={"token": token}, transports=["websocket"])
        assert reasons and "unauthorized" in json.dumps(reasons[0]), name
        assert "Traceback" not in json.dumps(reasons[0])
        await sio.disconnect()
    sio = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(cluster.urls[0], transports=["websocket"])
    await sio.disconnect()
    async with httpx.AsyncClient(base_url=cluster.urls[0]) as http:
        resp = await http.get(
            "/api/calls/call-x", headers={"Authorization": f"Bearer {cases['expired']}"}
        )
        assert (
            resp.status_code == 401 and resp.json()["error"]["message"] == "the token has expired"
        )
        resp = await http.post("/api/calls", json={"conversationId": 5})
        assert resp.status_code == 401
        resp = await http.post(
            "/api/calls",
            content=b"{not json",
            headers={
                "Authorization": f"Bearer {GatewayCluster.token(cluster, 'eve')}",
                "Content-Type": "application/json",
            },
        )
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "bad_request"


async def test_malformed_socketio_packets_do_not_break_the_gateway(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    token = cluster.token(f"raw-{uid}")
    url = cluster.urls[0].replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        opened = await ws.receive_str(timeout=5)
        assert opened.startswith("0")
        await ws.send_str("40" + json.dumps({"token": token}))
        assert (await ws.receive_str(timeout=5)).startswith("40")
        for junk in ('42["call:signal", {bad json', "4299", "42", "9garbage", '42{"a":1}'):
            await ws.send_str(junk)
        await ws.send_str('421["call:heartbeat",{"callId":"call-x"}]')
        # Either the server answers the ack or it dropped this broken socket; both are fine.
        with_timeout = await ws.receive(timeout=5)
        assert with_timeout.type in (
            aiohttp.WSMsgType.TEXT,
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
        )
    # The gateway is fine and serves others.
    a, b, _ = await _active_call(cluster, uid, clients)
    assert (await a.signal(b.participant_id or "", "offer", sdp=SDP))["ok"] is True
    async with httpx.AsyncClient(base_url=cluster.urls[0]) as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_a_dropped_socket_resumes_its_place_on_another_gateway(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    a, b, call_id = await _active_call(cluster, uid, clients)
    await a.toggle_video(False)
    await b.wait_for("call:media-toggled")
    pid, token = a.participant_id, a.resume_token
    await a.drop()  # the network drops
    lost = await b.wait_for("call:participant-disconnected")
    assert lost["participantId"] == pid
    again = await CallClient.connect(cluster.urls[1], a.token, name="a2", media=False)
    clients.append(again)
    ack = await again.join(call_id, resume_token=token)
    assert ack["resumed"] is True and ack["participantId"] == pid
    me = next(p for p in ack["call"]["participants"] if p["participantId"] == pid)
    assert me["videoEnabled"] is False and me["connection"] == "connected"
    await b.wait_for("call:participant-resumed", lambda p: p["participant"]["participantId"] == pid)
    assert ack["call"]["status"] == "active"
    # A stale token no longer works; the new one was handed out.
    stale = await again.request("call:join", {"callId": call_id, "resumeToken": token})
    assert stale["error"]["code"] == "forbidden"


async def test_a_socket_that_never_returns_leaves_after_the_grace(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    a, b, call_id = await _active_call(cluster, uid, clients)
    b.start_heartbeats(0.5)
    await a.drop()
    await b.wait_for("call:participant-disconnected")
    ended = await b.wait_for("call:ended", timeout=10)
    assert ended["reason"] == "connection_lost" and ended["callId"] == call_id


async def test_a_sockets_events_are_handled_in_the_order_sent(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    """Fire-and-forget bursts (mute/unmute, an offer then its candidates) keep their order:
    the last toggle wins, and candidates never overtake their offer."""
    a, b, call_id = await _active_call(cluster, uid, clients)
    assert b.participant_id
    for _ in range(5):
        for enabled in (False, True, False, True):
            await a.sio.emit("call:toggle-audio", {"callId": call_id, "enabled": enabled})
    candidate = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host", "sdpMid": "0"}
    await a.sio.emit(
        "call:signal", {"callId": call_id, "to": b.participant_id, "type": "offer", "sdp": SDP}
    )
    for _ in range(5):
        await a.sio.emit(
            "call:signal",
            {
                "callId": call_id,
                "to": b.participant_id,
                "type": "ice-candidate",
                "candidate": candidate,
            },
        )
    await b.wait_for("call:signal", lambda p: p["type"] == "ice-candidate")
    kinds = [p["type"] for p in b.seen("call:signal")]
    assert kinds[0] == "offer", kinds
    await a.heartbeat()  # handled after everything above
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(
            f"{cluster.urls[1]}/api/calls/{call_id}",
            headers={"Authorization": f"Bearer {b.token}"},
        )
    me = next(p for p in resp.json()["participants"] if p["participantId"] == a.participant_id)
    assert me["audioEnabled"] is True


async def test_either_person_ends_a_direct_call_and_both_hear_of_it(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    a, b, call_id = await _active_call(cluster, uid, clients)
    ack = await b.end()  # the callee, not the initiator
    assert ack["ok"] and ack["reason"] == "completed"
    for person in (a, b):
        ended = await person.wait_for("call:ended")
        assert ended["callId"] == call_id and ended["reason"] == "completed"
