"""Whole calls through real gateway processes, the two people on two different gateways."""

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent
from tests.support.call_client import CallClient
from tests.support.gateways import GatewayCluster
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector


@pytest.fixture(scope="module")
def cluster(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    gateways = GatewayCluster(nats_server.url, count=2).start()
    yield gateways
    gateways.stop()


class EventLog(Collector[object]):
    """Every call event the bus carries for one call, in arrival order."""

    @property
    def events(self) -> list[object]:
        return self.items

    def types(self) -> list[str]:
        return [type(e).__name__ for e in self.items]

    async def wait_type(self, name: str, timeout: float = 10) -> object:
        await self.wait(lambda events: name in self.types(), timeout)
        return next(e for e in self.items if type(e).__name__ == name)


async def test_direct_call_across_two_gateways_with_media(
    cluster: GatewayCluster, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    alice_id, bob_id, conv = f"alice-{uid}", f"bob-{uid}", f"dm-{uid}"
    cluster.put_conversation(conv, "DIRECT", [alice_id, bob_id])
    gw_a, gw_b = cluster.urls
    alice = await CallClient.connect(gw_a, cluster.token(alice_id, "Alice"), name="alice")
    bob = await CallClient.connect(gw_b, cluster.token(bob_id, "Bob", "fr"), name="bob")
    clients += [alice, bob]

    started = await alice.initiate(conv)
    call_id = started["call"]["callId"]
    log = EventLog()
    await bus.subscribe(subjects.call_events_of(call_id), AnyCallEvent, log)
    await bus.flush()
    ice = started["iceServers"]
    # TURN credentials scoped to this call and Alice's participant in it.
    scoped = f":{call_id}.{started['participantId']}"
    assert any(s.get("username", "").endswith(scoped) for s in ice)

    incoming = await bob.wait_for("call:incoming", lambda p: p["callId"] == call_id)
    assert incoming["caller"]["userId"] == alice_id and incoming["conversationType"] == "DIRECT"
    await bob.accept(call_id)
    await bob.wait_for("call:started", lambda p: p["callId"] == call_id)
    await alice.wait_for("call:accepted", lambda p: p["callId"] == call_id)
    # Alice (already in) offers to Bob on call:participant-joined; media flows both ways.
    await asyncio.gather(alice.wait_media(), bob.wait_media())
    assert bob.links[alice.participant_id or ""].candidates_received > 0

    await alice.toggle_audio(False)
    muted = await bob.wait_for("call:media-toggled")
    assert muted == {
        "callId": call_id,
        "participantId": alice.participant_id,
        "audioEnabled": False,
        "videoEnabled": True,
    }
    await alice.toggle_audio(True)
    await bob.wait_for("call:media-toggled", lambda p: p["audioEnabled"] is True)

    await bob.leave()
    ended = await alice.wait_for("call:ended", lambda p: p["callId"] == call_id)
    assert ended["reason"] == "completed"
    await log.wait_type("CallEnded")
    types = log.types()
    assert types.count("CallEnded") == 1
    for name in ("ParticipantJoined", "CallStatusChanged", "MediaStateChanged", "ParticipantLeft"):
        assert name in types
    async with httpx.AsyncClient(base_url=gw_b) as http:
        token = cluster.token(alice_id)
        state = (
            await http.get(f"/api/calls/{call_id}", headers={"Authorization": f"Bearer {token}"})
        ).json()
        assert state["status"] == "ended" and state["endReason"] == "completed"
        active = await http.get(
            f"/api/conversations/{conv}/active-call", headers={"Authorization": f"Bearer {token}"}
        )
        assert active.status_code == 404


async def test_missed_call_after_ring_timeout(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    alice_id, bob_id, conv = f"alice-{uid}", f"bob-{uid}", f"dm-{uid}"
    cluster.put_conversation(conv, "DIRECT", [alice_id, bob_id])
    alice = await CallClient.connect(cluster.urls[0], cluster.token(alice_id), media=False)
    bob = await CallClient.connect(cluster.urls[1], cluster.token(bob_id), media=False)
    clients += [alice, bob]
    alice.start_heartbeats(0.5)
    started = await alice.initiate(conv)
    call_id = started["call"]["callId"]
    await bob.wait_for("call:incoming")
    missed = await bob.wait_for("call:missed", lambda p: p["callId"] == call_id, timeout=10)
    ended = await alice.wait_for("call:ended", lambda p: p["callId"] == call_id, timeout=2)
    assert ended["reason"] == "missed" and missed["callId"] == call_id
    # A new call may start at once: the claim was released.
    again = await alice.initiate(conv)
    assert again["call"]["callId"] != call_id


async def test_group_decline_leaves_the_others_ringing(
    cluster: GatewayCluster, uid: str, clients: list[CallClient]
) -> None:
    ids = [f"{n}-{uid}" for n in ("ann", "ben", "cat")]
    conv = f"grp-{uid}"
    cluster.put_conversation(conv, "GROUP", ids)
    ann, ben, cat = [
        await CallClient.connect(cluster.urls[i % 2], cluster.token(u), name=u, media=False)
        for i, u in enumerate(ids)
    ]
    clients += [ann, ben, cat]
    call_id = (await ann.initiate(conv))["call"]["callId"]
    await ben.wait_for("call:incoming")
    await cat.wait_for("call:incoming")
    declined = await ben.decline(call_id)
    assert declined["status"] == "ringing"
    note = await ann.wait_for("call:declined")
    assert note["userId"] == ids[1]
    # Cat is still being rung and can still accept; the call becomes active.
    await cat.accept(call_id)
    await ann.wait_for("call:participant-joined")
    assert not cat.seen("call:missed") and not ann.seen("call:ended")
    # In a GROUP, a leave affects only that person; the call ends with the last one.
    await ann.leave()
    left = await cat.wait_for("call:participant-left")
    assert left["reason"] == "left" and left["activeCount"] == 1
    await cat.leave()
    async with httpx.AsyncClient(base_url=cluster.urls[0]) as http:
        headers = {"Authorization": f"Bearer {cluster.token(ids[0])}"}
        state = (await http.get(f"/api/calls/{call_id}", headers=headers)).json()
    assert state["status"] == "ended" and state["endReason"] == "completed"
    statuses = {i["userId"]: i["status"] for i in state["invitees"]}
    assert statuses == {ids[1]: "declined", ids[2]: "accepted"}


async def test_one_active_call_per_conversation_under_concurrent_starts(
    cluster: GatewayCluster, uid: str
) -> None:
    members = [f"m{i}-{uid}" for i in range(6)]
    conv = f"grp-{uid}"
    cluster.put_conversation(conv, "GROUP", members)
    tokens = [cluster.token(m) for m in members]

    async def start(i: int) -> httpx.Response:
        async with httpx.AsyncClient(base_url=cluster.urls[i % 2]) as http:
            return await http.post(
                "/api/calls",
                json={"conversationId": conv},
                headers={"Authorization": f"Bearer {tokens[i]}"},
            )

    results = await asyncio.gather(*(start(i) for i in range(6)))
    codes = sorted(r.status_code for r in results)
    assert codes == [201, 409, 409, 409, 409, 409]
    winner = next(r for r in results if r.status_code == 201).json()["call"]["callId"]
    for r in results:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "conflict"
            assert r.json()["error"]["activeCallId"] == winner


async def test_rest_lifecycle_and_roles(cluster: GatewayCluster, uid: str) -> None:
    owner, mod, member = f"own-{uid}", f"mod-{uid}", f"mem-{uid}"
    conv = f"grp-{uid}"
    cluster.put_conversation(conv, "GROUP", [owner, mod, member], roles={mod: "moderator"})
    h = {u: {"Authorization": f"Bearer {cluster.token(u)}"} for u in (owner, mod, member)}
    async with httpx.AsyncClient(base_url=cluster.urls[1]) as http:
        started = await http.post("/api/calls", json={"conversationId": conv}, headers=h[owner])
        assert started.status_code == 201
        call_id = started.json()["call"]["callId"]
        joined = await http.post(f"/api/calls/{call_id}/participants", headers=h[member])
        assert joined.status_code == 201 and joined.json()["call"]["status"] == "active"
        member_pid = joined.json()["participantId"]
        active = await http.get(f"/api/conversations/{conv}/active-call", headers=h[mod])
        assert active.json()["callId"] == call_id
        # A plain member may not end the call nor remove someone; a moderator may.
        refused = await http.delete(f"/api/calls/{call_id}", headers=h[member])
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        owner_pid = started.json()["participantId"]
        refused = await http.delete(
            f"/api/calls/{call_id}/participants/{owner_pid}", headers=h[member]
        )
        assert refused.status_code == 403
        removed = await http.delete(
            f"/api/calls/{call_id}/participants/{member_pid}", headers=h[mod]
        )
        assert removed.status_code == 200 and len(removed.json()["participants"]) == 1
        ended = await http.delete(f"/api/calls/{call_id}", headers=h[mod])
        assert ended.json()["status"] == "ended" and ended.json()["endReason"] == "completed"
        schema = (await http.get("/openapi.json")).json()
        for path in (
            "/api/calls",
            "/api/calls/{call_id}",
            "/api/calls/{call_id}/participants",
            "/api/calls/{call_id}/participants/{participant_id}",
            "/api/conversations/{conversation_id}/active-call",
            "/api/conversations/{conversation_id}/share-links",
            "/api/guests",
        ):
            assert path in schema["paths"], path
        assert "JoinedCall" in schema["components"]["schemas"]
