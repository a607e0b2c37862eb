"""History end to end: a real gateway and a real archive process, nats-server and nx-27017.

Calls made through the gateway's REST API are archived by the archive process and read back
through ``/api/calls/history``, ``/api/calls/{id}`` and ``/api/calls/{id}/transcript``, with
access control; both processes serve ``/metrics`` and write their spans to files, so the
same calls check the named series and a trace across two service processes.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from schemas import subjects
from schemas.bus import Bus
from schemas.captions import Caption, TranscriptSegment
from schemas.ids import new_id
from tests.support.call_client import CallClient
from tests.support.gateways import GatewayCluster
from tests.support.mongo_server import MongoServer
from tests.support.nats_server import NatsServer, free_port, with_role
from tests.support.waiting import eventually

ADMIN_PASSWORD = "admin-ui-test-password"


@dataclass
class HistoryStack:
    gateways: GatewayCluster
    archive: subprocess.Popen[bytes]
    dir: Path
    gateway_metrics: str
    archive_metrics: str

    @property
    def url(self) -> str:
        return self.gateways.urls[0]

    def spans(self, name: str) -> list[dict[str, Any]]:
        path = self.dir / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    """This module's own server: the archive's latency metrics count every transcript on
    the bus, and the session's server carries other modules' captions."""
    server = NatsServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer, mongo_server: MongoServer) -> Iterator[HistoryStack]:
    run = Path(tempfile.mkdtemp(prefix="history-"))
    db = f"history-{new_id()[:8]}"
    gw_metrics, ar_metrics = free_port(), free_port()
    gateways = GatewayCluster(
        nats_server.url,
        count=1,
        env={
            "MONGO_URL": mongo_server.url,
            "MONGO_DATABASE": db,
            "CALL_ENDED_RETENTION_S": "1",
            "METRICS_PORT": str(gw_metrics),
            "OTEL_TRACES_EXPORTER": "file",
            "OTEL_TRACES_FILE": str(run / "gateway.jsonl"),
            "SOCKETIO_ADMIN_ENABLED": "true",
            "SOCKETIO_ADMIN_PASSWORD": ADMIN_PASSWORD,
        },
    ).start()
    env = {
        **os.environ,
        "NATS_URL": nats_server.url,
        "MONGO_URL": mongo_server.url,
        "MONGO_DATABASE": db,
        "ARCHIVE_DURABLE": "archive-history",
        "SERVICE_ID": f"archive-{new_id()[:8]}",
        "METRICS_PORT": str(ar_metrics),
        "OTEL_TRACES_EXPORTER": "file",
        "OTEL_TRACES_FILE": str(run / "archive.jsonl"),
        "HEARTBEAT_INTERVAL_S": "1",
    }
    with (run / "archive.log").open("wb") as log:
        archive = subprocess.Popen(
            [sys.executable, "-m", "gateway.archive"],
            env=with_role("gateway.archive", env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield HistoryStack(
        gateways,
        archive,
        run,
        f"http://127.0.0.1:{gw_metrics}/metrics",
        f"http://127.0.0.1:{ar_metrics}/metrics",
    )
    archive.terminate()
    assert archive.wait(20) == 0, (run / "archive.log").read_text()[-3000:]
    assert "Traceback" not in (run / "archive.log").read_text()
    gateways.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Scenario:
    uid: str
    tokens: dict[str, str]
    group_call: str
    direct_call: str
    utterances: list[str]


async def _run_scenario(stack: HistoryStack, bus: Bus, uid: str) -> Scenario:
    """alice calls bob and carol (group): bob answers, a guest joins by link, two captions
    flow, alice ends it; then alice calls dave (direct) and hangs up before he answers."""
    g = stack.gateways
    users = {n: f"{n}-{uid}" for n in ("alice", "bob", "carol", "dave", "erin")}
    group, direct = f"grp-{uid}", f"dm-{uid}"
    g.put_conversation(
        group, "GROUP", [users["alice"], users["bob"], users["carol"]], {users["alice"]: "admin"}
    )
    g.put_conversation(direct, "DIRECT", [users["alice"], users["dave"]])
    tokens = {n: g.token(u, name=n.title()) for n, u in users.items()}
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        started = await http.post(
            "/api/calls", json={"conversationId": group}, headers=bearer(tokens["alice"])
        )
        assert started.status_code == 201, started.text
        call = started.json()["call"]["callId"]
        alice_pid = started.json()["participantId"]
        joined = await http.post(f"/api/calls/{call}/participants", headers=bearer(tokens["bob"]))
        assert joined.status_code == 201, joined.text
        bob_pid = joined.json()["participantId"]
        link = await http.post(
            f"/api/conversations/{group}/share-links", json={}, headers=bearer(tokens["alice"])
        )
        guest = await http.post(
            "/api/guests", json={"link": link.json()["token"], "displayName": "Gus"}
        )
        tokens["guest"] = guest.json()["token"]
        entered = await http.post(
            f"/api/calls/{call}/participants", headers=bearer(tokens["guest"])
        )
        assert entered.status_code == 201, entered.text

        spoken = datetime.now(UTC)
        utterances = [f"u1-{uid}", f"u2-{uid}"]
        for i, (utterance, speaker, lang, text) in enumerate(
            (
                (utterances[0], alice_pid, "en", "Hello everyone."),
                (utterances[1], bob_pid, "fr", "Bonjour."),
            )
        ):
            at = spoken + timedelta(seconds=i)
            await bus.publish(
                subjects.transcript_segment(call),
                TranscriptSegment(call_id=call, utterance_id=utterance, participant_id=speaker,
                                  language=lang, text=text, is_final=True, speech_ended_at=at,
                                  produced_at=at + timedelta(milliseconds=700)),
            )  # fmt: skip
            for target in ("en", "fr"):
                await bus.publish(
                    subjects.caption(call, target),
                    Caption(call_id=call, utterance_id=utterance, speaker_participant_id=speaker,
                            language=target, text=f"[{target}] {text}", source_language=lang,
                            source_text=text, is_final=True, translated=target != lang,
                            speech_ended_at=at, translation_ms=50,
                            produced_at=at + timedelta(milliseconds=800)),
                )  # fmt: skip
        await bus.flush()
        ended = await http.delete(f"/api/calls/{call}", headers=bearer(tokens["alice"]))
        assert ended.status_code == 200, ended.text

        rung = await http.post(
            "/api/calls", json={"conversationId": direct}, headers=bearer(tokens["alice"])
        )
        direct_call = rung.json()["call"]["callId"]
        hung_up = await http.delete(f"/api/calls/{direct_call}", headers=bearer(tokens["alice"]))
        assert hung_up.status_code == 200, hung_up.text

        async def archived() -> bool:
            page = await http.get("/api/calls/history", headers=bearer(tokens["alice"]))
            items = page.json().get("items", []) if page.status_code == 200 else []
            done = [i for i in items if i["status"] == "ended"]
            talk = await http.get(f"/api/calls/{call}/transcript", headers=bearer(tokens["bob"]))
            segments = talk.json().get("segments", []) if talk.status_code == 200 else []
            return len(done) == 2 and len(segments) == 2 and len(segments[1]["captions"]) == 2

        await eventually(archived, 30, step=0.1)
    return Scenario(uid, tokens, call, direct_call, utterances)


_done: dict[str, Scenario] = {}


@pytest.fixture
async def scenario(stack: HistoryStack, nats_server: NatsServer) -> Scenario:
    if "s" not in _done:
        from schemas.settings import BusSettings

        bus = await Bus.connect(BusSettings(nats_url=nats_server.url), "history-test")
        try:
            _done["s"] = await _run_scenario(stack, bus, new_id()[:10])
        finally:
            await bus.close()
    return _done["s"]


async def test_history_lists_the_callers_calls_newest_first_with_missed(
    stack: HistoryStack, scenario: Scenario
) -> None:
    t = scenario.tokens
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        first = (await http.get("/api/calls/history?limit=1", headers=bearer(t["alice"]))).json()
        assert [i["callId"] for i in first["items"]] == [scenario.direct_call]
        assert first["items"][0]["role"] == "initiator" and first["nextCursor"]
        second = await http.get(
            "/api/calls/history",
            params={"limit": 1, "cursor": first["nextCursor"]},
            headers=bearer(t["alice"]),
        )
        assert second.status_code == 200, (second.text, first["nextCursor"])
        everything = (await http.get("/api/calls/history", headers=bearer(t["alice"]))).json()
        assert second.json()["items"], (first, everything)
        item = second.json()["items"][0]
        assert item["callId"] == scenario.group_call and item["participantCount"] == 3
        assert item["endReason"] == "completed" and item["tookPart"] is True
        missed = await http.get("/api/calls/history?missed=true", headers=bearer(t["dave"]))
        assert [i["callId"] for i in missed.json()["items"]] == [scenario.direct_call]
        carol = await http.get("/api/calls/history?missed=true", headers=bearer(t["carol"]))
        assert [i["callId"] for i in carol.json()["items"]] == [scenario.group_call]
        bob = await http.get("/api/calls/history?missed=true", headers=bearer(t["bob"]))
        assert bob.json()["items"] == []
        erin = await http.get("/api/calls/history", headers=bearer(t["erin"]))
        assert erin.json() == {"items": [], "nextCursor": None}
        bad = await http.get("/api/calls/history?cursor=nope", headers=bearer(t["alice"]))
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_request"
        # A well-formed cursor with a time BSON cannot hold: refused, not a 500 from the driver.
        huge = base64.urlsafe_b64encode(b'[99999999999999999999999,"x"]').decode().rstrip("=")
        for page in ("/api/calls/history", f"/api/calls/{scenario.group_call}/transcript"):
            crafted = await http.get(page, params={"cursor": huge}, headers=bearer(t["alice"]))
            assert crafted.status_code == 422, crafted.text
            assert "cursor" in crafted.json()["error"]["message"]
        anonymous = await http.get("/api/calls/history")
        assert anonymous.status_code == 401


async def test_a_call_reads_from_the_archive_once_it_left_the_live_bucket(
    stack: HistoryStack, scenario: Scenario
) -> None:
    t = scenario.tokens
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:

        async def archived() -> bool:
            r = await http.get(f"/api/calls/{scenario.group_call}", headers=bearer(t["bob"]))
            return r.status_code == 200 and r.json()["source"] == "archive"

        await eventually(archived, 30, step=0.1)  # CALL_ENDED_RETENTION_S is 1 s here
        call = await http.get(f"/api/calls/{scenario.group_call}", headers=bearer(t["bob"]))
        body = call.json()
        assert body["status"] == "ended" and body["endReason"] == "completed"
        names = sorted(p["displayName"] for p in body["history"]["participants"])
        assert names == ["Alice", "Bob", "Gus"]
        assert all(p["leftAt"] for p in body["history"]["participants"])
        assert {i["status"] for i in body["invitees"]} == {"accepted", "cancelled"}
        guest = await http.get(f"/api/calls/{scenario.group_call}", headers=bearer(t["guest"]))
        assert guest.status_code == 200
        for who in ("erin", "dave"):
            refused = await http.get(f"/api/calls/{scenario.group_call}", headers=bearer(t[who]))
            assert refused.status_code == 404, who


async def test_the_transcript_is_only_for_people_who_were_in_the_call(
    stack: HistoryStack, scenario: Scenario
) -> None:
    t = scenario.tokens
    path = f"/api/calls/{scenario.group_call}/transcript"
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        bob = (await http.get(path, headers=bearer(t["bob"]))).json()
        assert [s["utteranceId"] for s in bob["segments"]] == scenario.utterances
        assert bob["segments"][0]["speakerName"] == "Alice"
        assert [c["language"] for c in bob["segments"][0]["captions"]] == ["en", "fr"]
        page = (await http.get(path, params={"limit": 1}, headers=bearer(t["bob"]))).json()
        rest = await http.get(
            path, params={"limit": 1, "cursor": page["nextCursor"]}, headers=bearer(t["bob"])
        )
        assert [s["utteranceId"] for s in page["segments"] + rest.json()["segments"]] == (
            scenario.utterances
        )
        french = (await http.get(path, params={"lang": "fr"}, headers=bearer(t["guest"]))).json()
        assert [c["text"] for c in french["segments"][1]["captions"]] == ["[fr] Bonjour."]
        carol = await http.get(path, headers=bearer(t["carol"]))  # rung, never joined
        assert carol.status_code == 403 and carol.json()["error"]["code"] == "forbidden"
        for who in ("erin", "dave"):
            assert (await http.get(path, headers=bearer(t[who]))).status_code == 404
        other = f"/api/calls/{scenario.direct_call}/transcript"
        assert (await http.get(other, headers=bearer(t["guest"]))).status_code == 404


def _series(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_the_metrics_endpoints_expose_the_named_series(
    stack: HistoryStack, scenario: Scenario
) -> None:
    client = await CallClient.connect(stack.url, scenario.tokens["erin"], media=False)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.get(
                f"{stack.url}/api/calls/{scenario.group_call}/transcript",
                headers=bearer(scenario.tokens["carol"]),
            )
            assert refused.status_code == 403

            async def one_socket() -> bool:
                text = (await http.get(stack.gateway_metrics)).text
                return _series(text).get("meeshy_gateway_sockets") == 1

            await eventually(one_socket, 10, step=0.1)  # load figures: as of the last beat
            gw = _series((await http.get(stack.gateway_metrics)).text)
            ar = _series((await http.get(stack.archive_metrics)).text)
    finally:
        await client.close()
    assert gw['meeshy_gateway_http_errors_total{code="forbidden"}'] >= 1
    assert gw["meeshy_gateway_active_calls"] >= 0
    assert gw["meeshy_bus_published_total"] > 0 and gw["meeshy_service_state"] == 1
    assert any(k.startswith('meeshy_service_info{kind="gateway"') for k in gw)
    assert ar['meeshy_calls_started_total{conversation_type="GROUP"}'] >= 1
    assert ar['meeshy_calls_ended_total{reason="completed"}'] >= 2
    assert ar['meeshy_participants_joined_total{kind="guest"}'] >= 1
    assert ar["meeshy_call_setup_seconds_count"] >= 1
    count = ar['meeshy_transcription_latency_seconds_count{source="server"}']
    total = ar['meeshy_transcription_latency_seconds_sum{source="server"}']
    assert count >= 2 and 0.6 <= total / count <= 0.8  # produced 0.7 s after speech
    assert ar['meeshy_caption_latency_seconds_count{translated="true"}'] >= 2
    assert ar['meeshy_archive_events_total{outcome="new"}'] >= 10


async def test_a_trace_spans_the_gateway_and_the_archive(
    stack: HistoryStack, scenario: Scenario
) -> None:
    def joined() -> bool:
        published = {
            s["span_id"]: s
            for s in stack.spans("gateway")
            if s["kind"] == "PRODUCER" and scenario.group_call in s["attributes"].get(
                "messaging.destination.name", "")
        }  # fmt: skip

        def continues(s: dict[str, Any]) -> bool:
            """Handled alone (a child of the publication) or in a batch (linked to it)."""
            if s["parent_id"] in published:
                return bool(published[s["parent_id"]]["trace_id"] == s["trace_id"])
            return any(
                link["span_id"] in published
                and published[link["span_id"]]["trace_id"] == link["trace_id"]
                for link in s.get("links", [])
            )

        return any(s["kind"] == "CONSUMER" and continues(s) for s in stack.spans("archive"))

    await eventually(joined, 20, step=0.1)
    archive_spans = stack.spans("archive")
    assert {s["service"] for s in archive_spans} == {"archive"}
    assert {s["service"] for s in stack.spans("gateway")} == {"gateway"}
    assert all(s["name"] != "svc.heartbeat publish" for s in stack.spans("gateway"))


async def test_the_socketio_admin_ui_needs_its_login(stack: HistoryStack) -> None:
    for password, admitted in (("wrong-password-here", False), (ADMIN_PASSWORD, True)):
        sio = socketio.AsyncClient(reconnection=False)
        try:
            await sio.connect(
                stack.url,
                namespaces=["/admin"],
                auth={"username": "admin", "password": password},
                transports=["websocket"],
                wait_timeout=10,
            )
            connected = "/admin" in sio.namespaces
        except socketio.exceptions.ConnectionError:
            connected = False
        finally:
            await sio.disconnect()
        assert connected is admitted, password


async def test_who_left_the_call_or_the_conversation_reads_no_more_of_it(
    stack: HistoryStack, nats_server: NatsServer
) -> None:
    """Transcript segments only from the reader's time in the call; a member who left the
    conversation and a guest whose link was revoked (so removed) read nothing more, and a
    live call that refuses someone never falls back to its archived view."""
    from schemas.settings import BusSettings

    uid = new_id()[:10]
    g = stack.gateways
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    group = f"grp-{uid}"
    g.put_conversation(group, "GROUP", [alice, bob], {alice: "admin"})
    t = {"alice": g.token(alice, name="Alice"), "bob": g.token(bob, name="Bob")}
    bus = await Bus.connect(BusSettings(nats_url=nats_server.url), "history-access-test")
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        try:
            started = await http.post(
                "/api/calls", json={"conversationId": group}, headers=bearer(t["alice"])
            )
            call, alice_pid = started.json()["call"]["callId"], started.json()["participantId"]
            bob_pid = (
                await http.post(f"/api/calls/{call}/participants", headers=bearer(t["bob"]))
            ).json()["participantId"]
            link = (
                await http.post(
                    f"/api/conversations/{group}/share-links", json={}, headers=bearer(t["alice"])
                )
            ).json()
            t["guest"] = (
                await http.post("/api/guests", json={"link": link["token"], "displayName": "Gus"})
            ).json()["token"]
            entered = await http.post(f"/api/calls/{call}/participants", headers=bearer(t["guest"]))
            assert entered.status_code == 201, entered.text

            async def say(utterance: str, at: datetime) -> None:
                await bus.publish(
                    subjects.transcript_segment(call),
                    TranscriptSegment(call_id=call, utterance_id=utterance,
                                      participant_id=alice_pid, language="en", text="Hi.",
                                      is_final=True, speech_ended_at=at, produced_at=at),
                )  # fmt: skip
                await bus.flush()

            await say(f"u1-{uid}", datetime.now(UTC))
            left = await http.delete(
                f"/api/calls/{call}/participants/{bob_pid}", headers=bearer(t["bob"])
            )
            assert left.status_code == 200, left.text
            # Said well after bob left (past the clock slack): not his to read.
            await say(f"u2-{uid}", datetime.now(UTC) + timedelta(seconds=30))
            path = f"/api/calls/{call}/transcript"

            async def heard(who: str) -> list[str]:
                page = await http.get(path, headers=bearer(t[who]))
                assert page.status_code == 200, page.text
                return [s["utteranceId"] for s in page.json()["segments"]]

            async def windows_apply() -> bool:
                return await heard("guest") == [f"u1-{uid}", f"u2-{uid}"] and await heard(
                    "bob"
                ) == [f"u1-{uid}"]

            await eventually(windows_apply, 30, step=0.1)

            # bob leaves the conversation: the call runs on, he reads none of it any more.
            g.put_conversation(group, "GROUP", [alice], {alice: "admin"})
            refused = await http.get(path, headers=bearer(t["bob"]))
            assert refused.status_code == 403, refused.text
            view = await http.get(f"/api/calls/{call}", headers=bearer(t["bob"]))
            assert view.status_code == 404, view.text  # not the archived view of a live call

            revoked = await http.delete(
                f"/api/share-links/{link['linkId']}", headers=bearer(t["alice"])
            )
            assert revoked.status_code == 204, revoked.text
            for url in (path, f"/api/calls/{call}"):
                shut = await http.get(url, headers=bearer(t["guest"]))
                assert shut.status_code == 403, shut.text
                assert shut.json()["error"]["code"] == "forbidden"
            assert await heard("alice") == [f"u1-{uid}", f"u2-{uid}"]
        finally:
            await http.delete(f"/api/calls/{call}", headers=bearer(t["alice"]))
            await bus.close()
