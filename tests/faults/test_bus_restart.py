"""The whole bus restarts (nats-server SIGKILLed and started again on its store): every
service reconnects and every long-lived subscription resumes, with no manual action.

What each check proves, after the restart:

- heartbeats of every service come again (core publishes after the reconnect);
- a mute in a call that was already running reaches the other person's socket on the other
  gateway (KV compare-and-set, the outbox into ``CALL_EVENTS``, each gateway's ordered
  consumer of the event stream);
- a newcomer to an SFU call that was already running gets everybody's media and they get
  its (media RPC to the node, the per-call ``media.evt`` subscriptions that carry the slot
  maps to sockets held since before the restart);
- the SFU call dropping to two goes back to P2P (the selector's durable pull consumer, the
  per-call ``call.cmd`` subscriptions, media-node heartbeats for placement);
- a new call nobody answers rings out (the gateways' KV mirror that the sweeper reads);
- the archive stores the calls up to their last revision (its durable consumers);
- the memory stream ``AUDIO_CHUNKS``, which a restart empties of its definition too, is
  provisioned again.
"""

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.archive.repository import ArchiveRepository
from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent, CallModeChanged
from schemas.call_state import CallState
from schemas.heartbeat import ServiceHeartbeat
from schemas.kv import TypedKv
from schemas.provisioning import provision
from schemas.settings import BusSettings
from tests.support.call_client import CallClient
from tests.support.call_stack import CallStack
from tests.support.mongo_server import MongoServer
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector, eventually

pytestmark = pytest.mark.slow

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200)]


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    own = NatsServer(name="restarting").start()
    yield own
    own.cleanup()


@pytest.fixture(scope="module")
def stack(server: NatsServer, mongo_server: MongoServer) -> Iterator[CallStack]:
    calls = CallStack(
        server.url,
        gateways=2,
        selectors=1,
        media_nodes=1,
        archive_env={
            "MONGO_URL": mongo_server.url,
            "MONGO_DATABASE": "bus-restart",
            "ARCHIVE_DURABLE": "archive-bus-restart",
        },
    ).start_all()
    yield calls
    calls.stop()


@pytest.fixture
async def own_bus(server: NatsServer) -> AsyncIterator[Bus]:
    settings = BusSettings(nats_url=server.url, nats_connect_deadline_s=5)
    bus = await Bus.connect(settings, "restart-test")
    await provision(bus.js, settings)
    yield bus
    await bus.close()


async def _call_state(bus: Bus, call_id: str) -> CallState:
    kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
    entry = await kv.get(call_id)
    assert entry is not None
    return entry.value


async def test_after_a_whole_bus_restart_every_service_and_subscription_resumes(
    *,
    server: NatsServer,
    stack: CallStack,
    own_bus: Bus,
    mongo_server: MongoServer,
    uid: str,
    clients: list[CallClient],
) -> None:
    bus = own_bus
    users = [f"u{i}-{uid}" for i in range(7)]
    stack.put_conversation(f"dm-{uid}", "DIRECT", users[:2])
    stack.put_conversation(f"grp-{uid}", "GROUP", users[2:6])
    stack.put_conversation(f"ring-{uid}", "DIRECT", [users[5], users[6]])
    people = [
        await CallClient.connect(
            stack.urls[i % 2],
            stack.token(u),
            name=f"p{i}",
            colour=COLOURS[i % len(COLOURS)],
            heartbeats=True,
            media=i < 6,
        )
        for i, u in enumerate(users)
    ]
    clients += people
    a, b, c, d, e, f, ringer = people
    # A P2P call (a, b) and an SFU call (c, d, e), both running before the restart.
    direct = (await a.initiate(f"dm-{uid}"))["call"]["callId"]
    await b.accept(direct)
    group = (await c.initiate(f"grp-{uid}"))["call"]["callId"]
    await d.accept(group)
    await e.join(group)
    for x in (c, d, e):
        await x.wait_mode("sfu", timeout=30)
    await a.wait_media()
    assert a.participant_id and b.participant_id

    server.kill()
    server.start()
    await eventually(lambda: bus.nc.is_connected, 20)

    # Every service announces itself again.
    beats: Collector[ServiceHeartbeat] = Collector()
    await bus.subscribe(subjects.ALL_SERVICE_HEARTBEATS, ServiceHeartbeat, beats)
    await bus.flush()
    ids = {g.service_id for g in stack.gateways} | set(stack.services)
    await beats.wait(lambda items: {h.service_id for h in items} >= ids, 30)

    # The P2P call: a mute reaches b's socket on the other gateway.
    await a.toggle_audio(False)
    muted = await b.wait_for("call:media-toggled", timeout=30)
    assert muted["participantId"] == a.participant_id and muted["audioEnabled"] is False

    # The SFU call: a newcomer gets everyone's media, and everyone gets the newcomer's.
    log: Collector[AnyCallEvent] = Collector()
    await bus.subscribe(subjects.call_events_of(group), AnyCallEvent, log)
    await bus.flush()
    t = time.monotonic()
    await f.join(group)
    for x in (c, d, e, f):
        await x.wait_everyone(t, "sfu", timeout=30)

    # Down to two: the selector takes it back to P2P.
    await f.leave()
    await e.leave()
    await log.wait(
        lambda items: any(
            isinstance(ev, CallModeChanged) and ev.to_mode == "p2p" and ev.outcome == "completed"
            for ev in items
        ),
        30,
    )
    for x in (c, d):
        await x.wait_mode("p2p", timeout=20)

    # A new call nobody answers rings out: the sweepers see it in their mirrors.
    rung = (await f.initiate(f"ring-{uid}"))["call"]["callId"]
    missed = await ringer.wait_for("call:missed", lambda p: p["callId"] == rung, timeout=20)
    assert missed["callId"] == rung

    # The archive has both running calls up to their last revision.
    await a.end()
    await c.end()
    repo = ArchiveRepository.connect(mongo_server.url, "bus-restart")
    try:
        for call_id in (direct, group, rung):
            last = (await _call_state(bus, call_id)).seq

            async def archived(call_id: str = call_id, last: int = last) -> bool:
                session = await repo.session(call_id)
                return session is not None and session.seq == last

            await eventually(archived, 30, step=0.2)
    finally:
        repo.close()

    info = await bus.js.stream_info(subjects.AUDIO_CHUNKS_STREAM)
    assert info.config.name == subjects.AUDIO_CHUNKS_STREAM
    assert not stack.tracebacks(), stack.logs()
