"""The media node as a real process (``python -m media_node``), real aiortc participants.

Each participant is a :class:`tests.support.sfu_client.SfuClient` (an uplink and a
downlink of slots) over NATS. Every wait is on a condition with a timeout; nothing sleeps
and hopes, and no test bounds a wall-clock time (``bench/sfu_scale.py`` measures those).
"""

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec
import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import ActiveSpeakerChanged
from schemas.errors import RpcFailed
from schemas.media import (
    AnswerDownlink,
    AudioChunk,
    MediaNodeHeartbeat,
    OpenDownlink,
    OpenSession,
    Publish,
    SessionOpened,
    SetPreferences,
)
from schemas.media_events import LegStateChanged, SessionClosed, SlotsChanged, VideoDemandChanged
from tests.support.media_peer import NodeProcess, Rgb, colour_close
from tests.support.nats_server import NatsServer
from tests.support.sfu_client import NatsSfuTransport, SfuClient
from tests.support.waiting import Collector

T = TypeVar("T")

#: Twelve colours any two of which differ by more than the decoding tolerance.
PALETTE: list[Rgb] = [
    (c[0], c[1], c[2]) for c in itertools.product((30, 130, 230), repeat=3) if len(set(c)) > 1
][:12]


@pytest.fixture
async def node(bus: Bus, nats_server: NatsServer, uid: str) -> AsyncIterator[NodeProcess]:
    proc = await NodeProcess.start(bus, nats_server.url, f"media-{uid}")
    yield proc
    code = await proc.stop()
    assert code == 0, proc.log_text()
    assert not proc.tracebacks, proc.log_text()


async def collect(bus: Bus, subject: str, type_: type[T]) -> Collector[T]:
    collector: Collector[T] = Collector()
    await bus.subscribe(subject, type_, collector)
    await bus.flush()
    return collector


def colour_of(clients: list[SfuClient], pid: str) -> Rgb:
    return next(c.colour for c in clients if c.participant_id == pid)


def decoded_right(client: SfuClient, clients: list[SfuClient], min_frames: int = 3) -> bool:
    """Every video slot that shows someone decodes that someone's colour, lately."""
    for slot in client.slots:
        if slot.kind != "video" or slot.showing_id is None:
            continue
        colour = colour_of(clients, slot.showing_id)
        recent = [c for t, c, _ in slot.frames if t > slot.showing_since]
        if len(recent) < min_frames or not colour_close(recent[-1], colour):
            return False
    return True


async def all_decode_right(
    group: list[SfuClient], clients: list[SfuClient], timeout: float
) -> None:
    await asyncio.gather(*(c.wait_for(lambda c: decoded_right(c, clients), timeout) for c in group))


@pytest.mark.slow
async def test_a_call_of_twelve_follows_the_active_speaker_cleanly(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    transport = NatsSfuTransport(bus, node.node_id)
    demand = await collect(bus, subjects.media_event(call_id, "video_demand"), VideoDemandChanged)
    beats = await collect(bus, subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat)
    # Four of the twelve decode what they receive (a first joiner, a late joiner, the two
    # speakers); the others count packets. Decoding 48 VP8 streams in this one process
    # beside the encoders starved 2 CI cores past every deadline.
    decoding = {"p00", "p06", "p09", "p10"}
    clients = [
        SfuClient(
            transport,
            call_id,
            f"p{i:02d}",
            colour=PALETTE[i],
            video_slots=4,
            audio_slots=2,
            fps=10,
            decode=f"p{i:02d}" in decoding,
        )
        for i in range(12)
    ]
    watchers = [c for c in clients if c.decode]
    try:
        for client in clients:
            await client.join()
        everyone = [c.participant_id for c in clients]

        def first_joiners(c: SfuClient) -> set[str]:
            return {pid for pid in everyone if pid != c.participant_id}.intersection(
                [pid for pid in everyone if pid != c.participant_id][:4]
            )

        # Nobody spoke yet: everyone sees the first four to join (never themselves).
        await asyncio.gather(
            *(c.wait_for(lambda c: c.showing() == first_joiners(c), 30) for c in clients)
        )
        await all_decode_right(watchers, clients, 30)
        # Late joiners nobody shows are told to pause their video, and do.
        await demand.wait(
            lambda evs: (
                {e.participant_id for e in evs if not e.forwarded}
                >= {f"p{i:02d}" for i in range(5, 12)}
            ),
            20,
        )
        assert not any(e.participant_id == "p01" and not e.forwarded for e in demand.items)
        # Only the five publishers someone shows are forwarded at all.
        await beats.wait(
            lambda bs: any(
                b.node_id == node.node_id
                and b.video_publishers_forwarded == 5
                and b.forwarded_video_streams == 48
                for b in bs
            ),
            20,
        )

        # p09 speaks: it enters every other participant's slots, at a keyframe.
        clients[9].speaking = True
        others = [c for c in clients if c.participant_id != "p09"]
        await asyncio.gather(*(c.wait_for(lambda c: "p09" in c.showing(), 30) for c in others))
        await all_decode_right([c for c in watchers if c in others], clients, 30)
        assert any(e.participant_id == "p09" and e.forwarded for e in demand.items)
        # p10 takes over; p09 stays as a recent speaker.
        clients[9].speaking = False
        clients[10].speaking = True
        rest = [c for c in clients if c.participant_id not in ("p09", "p10")]
        await asyncio.gather(
            *(c.wait_for(lambda c: {"p09", "p10"} <= c.showing(), 30) for c in rest)
        )
        await all_decode_right([c for c in watchers if c in rest], clients, 30)

        for client in clients:
            # The slot map only moved forward, and every decoded frame in every slot is
            # the colour of someone that slot showed: no corrupted frame at a switch.
            versions = [e.version for e in client.events if isinstance(e, SlotsChanged)]
            assert versions == sorted(versions)
            shown = {
                s.showing_id
                for e in client.events
                if isinstance(e, SlotsChanged)
                for s in e.slots
                if s.showing_id
            }
            assert client.participant_id not in shown
            if not client.decode:
                continue  # it counted packets; it has no pictures to check
            palette = [colour_of(clients, pid) for pid in shown]
            assert any(slot.frames for slot in client.slots)
            for slot in client.slots:
                for _, colour, _ in slot.frames:
                    assert any(colour_close(colour, p) for p in palette), (slot.index, colour)
    finally:
        await asyncio.gather(*(c.leave() for c in clients))


@pytest.mark.slow
async def test_a_pinned_participant_keeps_its_slot_while_speakers_move(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    transport = NatsSfuTransport(bus, node.node_id)
    clients = [
        SfuClient(transport, call_id, f"q{i}", colour=PALETTE[i], video_slots=2, audio_slots=1)
        for i in range(5)
    ]
    try:
        for client in clients:
            await client.join()
        viewer = clients[0]
        await viewer.set_preferences(pinned=["q4"])
        await viewer.wait_for(lambda c: "q4" in c.showing() and decoded_right(c, clients), 30)
        pinned_slot = next(s.index for s in viewer.slots if s.showing_id == "q4")
        for speaker in (clients[2], clients[3], clients[1]):
            speaker.speaking = True
            pid = speaker.participant_id
            await viewer.wait_for(lambda c, pid=pid: pid in c.showing(), 30)  # type: ignore[misc]
            assert viewer.slots[pinned_slot].showing_id == "q4"
            speaker.speaking = False
        # Pinning oneself is refused; video_tiles=1 leaves only the pin.
        with pytest.raises(RpcFailed) as refused:
            await viewer.set_preferences(pinned=["q0"])
        assert refused.value.code == "bad_request"
        await viewer.set_preferences(pinned=["q4"], video_tiles=1)
        await viewer.wait_for(lambda c: c.assigned() == {"q4"}, 20)
    finally:
        await asyncio.gather(*(c.leave() for c in clients))


@pytest.mark.slow
async def test_loss_toward_one_subscriber_is_repaired_from_the_slot_history(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    transport = NatsSfuTransport(bus, node.node_id)
    beats = await collect(bus, subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat)
    pub = SfuClient(transport, call_id, "pub", colour=PALETTE[3], size=(320, 240), fps=30)
    sub = SfuClient(transport, call_id, "sub", video_slots=1, audio_slots=1, drop_video_every=8)
    try:
        await pub.join()
        await sub.join()
        await sub.wait_for(lambda c: c.dropped_packets >= 10 and len(c.slots[0].frames) >= 90, 40)
        frames = sub.slots[0].frames
        # Lost packets were retransmitted (NACK answered as RTX): every picture intact.
        assert all(colour_close(c, pub.colour) for _, c, _ in frames[-60:])
        counters = [n for _, _, n in frames[5:]]
        assert counters == sorted(counters)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(frames[5:])]
        assert max(gaps) < 1.0, max(gaps)
        await beats.wait(
            lambda bs: any(b.node_id == node.node_id and b.retransmissions_total > 0 for b in bs),
            10,
        )
    finally:
        await sub.leave()
        await pub.leave()


@pytest.mark.slow
async def test_prewarmed_sessions_forward_from_the_first_keyframe(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    transport = NatsSfuTransport(bus, node.node_id)
    beats = await collect(bus, subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat)
    clients = [
        SfuClient(transport, call_id, f"w{i}", colour=PALETTE[i], prewarm=True, video_slots=2)
        for i in range(3)
    ]
    try:
        for client in clients:
            await client.join()
        for client in clients:
            await client.wait_for(
                lambda c: (
                    sum(isinstance(e, LegStateChanged) and e.state == "connected" for e in c.events)
                    >= 2
                ),
                20,
            )
        await beats.wait(
            lambda bs: any(b.node_id == node.node_id and b.idle_sessions == 3 for b in bs), 20
        )
        # Assigned, but nothing to show until they send.
        assert all(not c.showing() and len(c.assigned()) == 2 for c in clients)
        assert all(not s.frames for c in clients for s in c.slots)
        for client in clients:
            await client.start_sending()
        await asyncio.gather(
            *(
                c.wait_for(lambda c: len(c.showing()) == 2 and decoded_right(c, clients), 20)
                for c in clients
            )
        )
        for client in clients:
            for slot in client.slots:
                if slot.kind == "video":
                    # The first decoded frame is a clean picture of its publisher.
                    assert colour_close(
                        slot.frames[0][1], colour_of(clients, slot.showing_id or "")
                    )
    finally:
        await asyncio.gather(*(c.leave() for c in clients))


#: The node's utterance settings for the tap test: interim chunks every 0.25 s of speech
#: (the default is 1 s, which a 1.2 s burst of speech cannot reach twice).
UTTERANCE_ENV = {"MEDIA_NODE_UTTERANCE_INTERIM_S": "0.25", "MEDIA_NODE_UTTERANCE_PAUSE_S": "0.2"}


def check_cumulative(chunks: list[AudioChunk]) -> int:
    """Every chunk of an utterance starts where the utterance starts and ends no earlier
    than the one before; returns the most non-final chunks before an utterance's first
    final."""
    most_interim = 0
    by_utterance: dict[str, list[AudioChunk]] = {}
    for chunk in chunks:
        by_utterance.setdefault(chunk.utterance_id, []).append(chunk)
    for pieces in by_utterance.values():
        pieces.sort(key=lambda c: c.sequence)
        assert [c.sequence for c in pieces] == list(range(len(pieces)))
        assert len({c.start_s for c in pieces}) == 1, "a chunk holds its utterance from its start"
        ends = [c.end_s for c in pieces]
        assert ends == sorted(ends)
        for c in pieces:
            assert len(c.pcm) == round((c.end_s - c.start_s) * 16000) * 2
            assert c.speech_end_s is not None
            assert c.start_s < c.speech_end_s <= c.end_s + 1e-3
        interim = 0
        for c in pieces:
            if c.is_final:
                break
            interim += 1
        most_interim = max(most_interim, interim)
    return most_interim


@pytest.mark.slow
async def test_transcribed_sessions_send_cumulative_chunks_cut_by_the_node_settings(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    """A ``captions`` session and a ``call`` session with transcription, each speaking, on
    a node started with ``MEDIA_NODE_UTTERANCE_*``: both are cut by the real cutter into
    cumulative chunks (interim ones at the configured pace, then a final one), with
    ``speech_end_s``; only the ``call`` one is forwarded."""
    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}", env=UTTERANCE_ENV)
    call_id = f"call-{uid}"
    transport = NatsSfuTransport(bus, node.node_id)
    chunks = await collect(bus, subjects.audio_chunks_of(call_id), AudioChunk)
    speakers = await collect(
        bus, subjects.call_event(call_id, ActiveSpeakerChanged.subject_name), ActiveSpeakerChanged
    )
    captions = SfuClient(
        transport,
        call_id,
        "talker",
        purpose="captions",
        transcription=True,
        speaking=True,
        steady_speech=False,
    )
    caller = SfuClient(
        transport,
        call_id,
        "caller",
        transcription=True,
        speaking=True,
        steady_speech=False,
        video=False,
        video_slots=0,
        audio_slots=1,
    )
    viewer = SfuClient(transport, call_id, "viewer", video_slots=2, audio_slots=2, audio=False)
    try:
        await captions.join()
        await caller.join()
        await viewer.join()

        def finals(pid: str) -> int:
            return sum(c.is_final for c in chunks.items if c.participant_id == pid)

        # Two final utterances each (the audio loops 1.2 s of speech, 0.8 s of silence).
        await chunks.wait(lambda cs: finals("talker") >= 2 and finals("caller") >= 2, 45)
        assert {c.participant_id for c in chunks.items} == {"talker", "caller"}
        for pid in ("talker", "caller"):
            mine = [c for c in chunks.items if c.participant_id == pid]
            assert all(c.sample_rate == 16000 and c.vad == "silero" for c in mine)
            assert all(c.language == "en" for c in mine)
            # Interim chunks every 0.25 s of speech: a 1.2 s burst gives several before
            # its final (with the default 1 s, at most one).
            assert check_cumulative(mine) >= 2, [(c.sequence, c.is_final) for c in mine]
        # The call session is heard in the viewer's audio slot; the captions one never.
        await viewer.wait_for(lambda v: v.assigned("audio") == {"caller"}, 15)
        assert not viewer.assigned("video")
        assert {s.participant_id for s in speakers.items} <= {"caller"}
        with pytest.raises(RpcFailed) as refused:
            await captions.request(OpenDownlink(session_id=captions.session_id), SessionOpened)
        assert refused.value.code == "bad_request"
    finally:
        await asyncio.gather(viewer.leave(), caller.leave(), captions.leave())
        code = await node.stop()
    assert code == 0, node.log_text()
    assert not node.tracebacks, node.log_text()


@pytest.mark.slow
async def test_leases_expire_and_renewals_name_the_unknown(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    transport = NatsSfuTransport(bus, node.node_id)
    closed = await collect(bus, subjects.media_event(call_id, "session_closed"), SessionClosed)
    kept = SfuClient(transport, call_id, "kept", lease_s=2, video=False)
    lapsed = SfuClient(transport, call_id, "lapsed", lease_s=2, video=False)
    try:
        await kept.join()
        await lapsed.join()
        lapsed_id = lapsed.session_id
        for _ in range(40):
            reply = await kept.renew()
            assert reply.renewed == [kept.session_id]
            try:
                await closed.wait(bool, 0.5)
                break
            except TimeoutError:
                continue
        (event,) = closed.items
        assert event.session_id == lapsed_id and event.reason == "lease_expired"
        from schemas.media import LeasesRenewed, RenewLeases

        reply = await kept.request(
            RenewLeases(session_ids=[kept.session_id, lapsed_id]), LeasesRenewed
        )
        assert reply.renewed == [kept.session_id] and reply.unknown == [lapsed_id]
    finally:
        await lapsed.leave(tell_node=False)
        await kept.leave()


async def test_bad_requests_get_typed_errors_and_the_node_keeps_serving(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    node_id = node.node_id
    open_subject = subjects.media_rpc(node_id, OpenSession.verb)

    async def code_of(subject: str, payload: bytes | msgspec.Struct) -> str:
        if isinstance(payload, bytes):
            reply = await bus.nc.request(subject, payload, timeout=10)
            assert reply.headers and reply.headers.get("Meeshy-Rpc-Status") == "error"
            return str(msgspec.json.decode(reply.data)["code"])
        with pytest.raises(RpcFailed) as info:
            await bus.request(subject, payload, SessionOpened, timeout=10)
        return info.value.code

    assert await code_of(open_subject, b"\xff not json") == "bad_request"
    assert await code_of(open_subject, b'{"type":"media.open_session","call_id":"a.b"}') == (
        "bad_request"
    )
    too_many_slots = b'{"type":"media.open_session","call_id":"c","participant_id":"p",'
    assert await code_of(open_subject, too_many_slots + b'"video_slots":99}') == "bad_request"
    publish_subject = subjects.media_rpc(node_id, Publish.verb)
    assert await code_of(publish_subject, OpenSession(call_id="c", participant_id="p")) == (
        "bad_request"
    )
    assert await code_of(publish_subject, Publish(session_id="nope", sdp="v=0")) == "not_found"

    transport = NatsSfuTransport(bus, node_id)
    client = SfuClient(transport, f"call-{uid}", "p1")
    opened = await transport.request(
        OpenSession(call_id=f"call-{uid}", participant_id="p1"), SessionOpened, 10
    )
    sid = opened.session_id
    try:
        assert await code_of(publish_subject, Publish(session_id=sid, sdp="m=video 9 x\r\n")) == (
            "bad_request"
        )
        two_videos = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        assert await code_of(publish_subject, Publish(session_id=sid, sdp=two_videos)) == (
            "bad_request"
        )
        answer_subject = subjects.media_rpc(node_id, AnswerDownlink.verb)
        # An answer with no offer asked for.
        assert await code_of(answer_subject, AnswerDownlink(session_id=sid, sdp="v=0")) == (
            "conflict"
        )
        prefs = subjects.media_rpc(node_id, SetPreferences.verb)
        assert await code_of(prefs, SetPreferences(session_id=sid, pinned=["p1"])) == (
            "bad_request"
        )
    finally:
        from schemas.media import CloseSession, MediaAck

        await transport.request(CloseSession(session_id=sid), MediaAck, 10)
    # After all that the node still serves a whole session.
    await client.join()
    other = SfuClient(transport, f"call-{uid}", "p2", colour=PALETTE[5])
    await other.join()
    try:
        await other.wait_for(lambda c: c.showing() == {"p1"} and decoded_right(c, [client]), 20)
    finally:
        await other.leave()
        await client.leave()


@pytest.mark.slow
async def test_drain_refuses_new_sessions_and_keeps_current_ones(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}")
    beats = await collect(bus, subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat)
    call_id = f"call-{uid}"
    transport = NatsSfuTransport(bus, node.node_id)
    pub = SfuClient(transport, call_id, "pub", colour=PALETTE[1])
    sub = SfuClient(transport, call_id, "sub", colour=PALETTE[2])
    try:
        await pub.join()
        await sub.join()
        await sub.wait_for(lambda c: len(c.slots[0].frames) >= 5, 20)
        node.terminate()
        await beats.wait(
            lambda bs: any(b.node_id == node.node_id and b.state == "draining" for b in bs), 10
        )
        with pytest.raises(RpcFailed) as refused:
            await SfuClient(transport, call_id, "newcomer").join()
        assert refused.value.code == "draining"
        seen = len(sub.slots[0].frames)
        await sub.wait_for(lambda c: len(c.slots[0].frames) >= seen + 15, 10)
        assert node.proc.returncode is None
    finally:
        await sub.leave()
        await pub.leave()
    assert await node.stop(timeout=15) == 0
    assert not node.tracebacks, node.log_text()
    assert any('"service.stopped"' in line for line in node.lines)
