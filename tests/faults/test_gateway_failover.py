"""A gateway SIGKILLed mid-call: its sockets take their place back on another gateway.

Nothing about a call lives in a gateway's memory that another cannot rebuild: the call's
state is in KV, the socket's place is a resume token, signals find a person through
``user.<id>.signal`` wherever their socket is. So a client whose gateway died reconnects
to any other with ``call:join {resumeToken}`` and is the same participant; peer-to-peer
media never went through the gateway and does not stop; nobody is marked as left.
"""

import time
from collections.abc import Iterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent, ParticipantDisconnected, ParticipantLeft
from schemas.media_events import AnyMediaEvent, SessionClosed
from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector, eventually

pytestmark = pytest.mark.slow

RED, GREEN, BLUE = (200, 40, 40), (40, 200, 40), (40, 40, 200)


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer) -> Iterator[CallStack]:
    calls = CallStack(nats_server.url, gateways=3, selectors=1, media_nodes=1).start_all()
    yield calls
    calls.stop()


def _revive(stack: CallStack, index: int) -> None:
    """Start a fresh gateway in the dead one's place (for the module's next test)."""
    stack.gateways[index] = stack.spawn(index)
    stack.wait_ready(stack.gateways[index])


async def _watch(bus: Bus, call_id: str) -> Collector[AnyCallEvent]:
    log: Collector[AnyCallEvent] = Collector()
    await bus.subscribe(subjects.call_events_of(call_id), AnyCallEvent, log)
    await bus.flush()
    return log


def _nobody_lost(log: Collector[AnyCallEvent]) -> None:
    lost = [e for e in log.items if isinstance(e, ParticipantLeft | ParticipantDisconnected)]
    assert lost == [], lost


async def test_p2p_media_flows_on_while_the_callers_gateway_is_dead_and_it_resumes_elsewhere(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    conv = f"dm-{uid}"
    stack.put_conversation(conv, "DIRECT", [f"a-{uid}", f"b-{uid}"])
    a = await CallClient.connect(stack.urls[0], stack.token(f"a-{uid}"), name="a", colour=RED)
    b = await CallClient.connect(stack.urls[1], stack.token(f"b-{uid}"), name="b", colour=GREEN)
    clients += [a, b]
    for x in (a, b):
        x.heartbeats = True
    call_id = (await a.initiate(conv))["call"]["callId"]
    log = await _watch(bus, call_id)
    await b.accept(call_id)
    await a.wait_media()
    await b.wait_media()
    assert a.participant_id and b.participant_id
    a_link, b_link = a.links[b.participant_id], b.links[a.participant_id]
    links_made = (a.p2p_links_made, b.p2p_links_made)

    stack.kill(0)  # a's gateway: SIGKILL, so a's socket drops and nothing is written
    await a.wait_for("client:dropped")
    # With no gateway at all, a and b keep seeing each other over the direct path.
    seen = (a_link.frames["video"], b_link.frames["video"])
    await eventually(
        lambda: a_link.frames["video"] >= seen[0] + 10 and b_link.frames["video"] >= seen[1] + 10,
        15,
    )

    pid = a.participant_id
    ack = await a.reconnect(stack.urls[2])
    assert ack is not None and ack["resumed"] is True and ack["participantId"] == pid
    assert ack["call"]["status"] == "active"
    assert {p["connection"] for p in ack["call"]["participants"]} == {"connected"}
    # The same peer connections carried on: nothing was renegotiated.
    assert a.links[b.participant_id] is a_link and b.links[pid] is b_link
    assert (a.p2p_links_made, b.p2p_links_made) == links_made
    # Signals and notices reach a through its new gateway.
    await a.toggle_audio(False)
    muted = await b.wait_for("call:media-toggled")
    assert muted["participantId"] == pid and muted["audioEnabled"] is False
    candidate = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host", "sdpMid": "0"}
    assert (await b.signal(pid, "ice-candidate", candidate=candidate))["ok"] is True
    relayed = await a.wait_for("call:signal", lambda p: p.get("type") == "ice-candidate")
    assert relayed["from"] == b.participant_id
    assert not b.seen("call:participant-left") and not b.seen("call:participant-disconnected")

    await b.end()
    await a.wait_for("call:ended")
    gone = [e for e in log.items if isinstance(e, ParticipantLeft)]
    assert {e.reason for e in gone} == {"call_ended"}
    assert not [e for e in log.items if isinstance(e, ParticipantDisconnected)]
    _revive(stack, 0)


async def test_an_sfu_participant_fails_over_by_itself_and_gets_its_media_back(
    stack: CallStack, bus: Bus, uid: str, clients: list[CallClient]
) -> None:
    conv = f"grp-{uid}"
    users = [f"u{i}-{uid}" for i in range(3)]
    stack.put_conversation(conv, "GROUP", users)
    a, b, c = [
        await CallClient.connect(
            url,
            stack.token(u),
            name=f"p{i}",
            colour=colour,
            heartbeats=True,
            failover=stack.urls,
        )
        for i, (url, u, colour) in enumerate(
            zip(
                [stack.urls[0], stack.urls[0], stack.urls[2]],
                users,
                [RED, GREEN, BLUE],
                strict=True,
            )
        )
    ]
    clients += [a, b, c]
    call_id = (await a.initiate(conv))["call"]["callId"]
    log = await _watch(bus, call_id)
    await b.accept(call_id)
    await c.join(call_id)
    for x in (a, b, c):
        await x.wait_mode("sfu", timeout=30)
    assert c.sfu is not None and c.participant_id
    old_session = c.sfu.session_id
    media: Collector[AnyMediaEvent] = Collector()
    await bus.subscribe(subjects.media_events_of(call_id), AnyMediaEvent, media)
    await bus.flush()

    pid = c.participant_id
    stack.kill(2)  # c's gateway
    dropped_at, resumed_at, url = await c.wait_resumed(timeout=20)
    assert url != stack.urls[2] and c.participant_id == pid
    # c's new gateway opened it a new session (the node replaced the old one) and told it.
    await eventually(lambda: c.sfu is not None and c.sfu.session_id != old_session, 20)
    for x in (a, b, c):
        await x.wait_everyone(resumed_at, "sfu")
    back_at = time.monotonic()
    # a and b kept seeing and hearing each other all along.
    for x, other in ((a, b), (b, a)):
        during = {
            (k, p)
            for t, who, k, p in x.arrivals
            if who == other.participant_id and dropped_at <= t <= back_at
        }
        assert during >= {("audio", "sfu"), ("video", "sfu")}, during
    replaced = [
        e for e in media.items if isinstance(e, SessionClosed) and e.session_id == old_session
    ]
    assert [e.reason for e in replaced] == ["replaced"]
    _nobody_lost(log)
    _revive(stack, 2)
