"""The media node as a real process (``python -m media_node``), real aiortc peers on loopback.

Every wait is on a condition with a timeout; nothing sleeps and hopes.
"""

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import ActiveSpeakerChanged
from schemas.errors import RpcFailed
from schemas.media import (
    AudioChunk,
    MediaNodeHeartbeat,
    OpenSession,
    Publish,
    SessionOpened,
    Subscribe,
)
from tests.support.media_peer import MediaPeer, NodeProcess, colour_close
from tests.support.nats_server import NatsServer
from tests.support.waiting import Collector

T = TypeVar("T")
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]


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
    await bus.nc.flush()
    return collector


@pytest.mark.slow
async def test_three_participants_receive_each_other(bus: Bus, node: NodeProcess, uid: str) -> None:
    call_id = f"call-{uid}"
    beats = await collect(bus, subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat)
    peers = [MediaPeer(bus, node.node_id, call_id, f"p{i}", colour=COLOURS[i]) for i in range(3)]
    try:
        for peer in peers:
            await peer.open()
            await peer.publish()
        pairs = list(itertools.permutations(peers, 2))
        for sub, pub in pairs:
            await sub.subscribe(pub.participant_id)
        feeds = [(sub, pub, sub.feeds[pub.participant_id]) for sub, pub in pairs]
        await asyncio.gather(
            *(
                feed.wait_until(lambda f: f.video_frames >= 30 and f.audio_frames >= 30, 30)
                for _, _, feed in feeds
            )
        )
        for sub, pub, feed in feeds:
            # Each publisher's colour survives encode -> SFU (no re-encode) -> decode.
            tail = feed.colours[-10:]
            assert all(colour_close(c, pub.colour) for c in tail), (sub.participant_id, tail)
            # Frame counters arrive in order: nothing duplicated or reordered by the SFU.
            counters = [c for c, _ in feed.counters]
            assert counters == sorted(counters)
        await beats.wait(
            lambda bs: any(
                b.node_id == node.node_id and b.participants == 3 and b.forwarded_streams == 12
                for b in bs
            ),
            10,
        )
    finally:
        for peer in peers:
            await peer.close()


@pytest.mark.slow
async def test_late_subscriber_gets_a_picture_quickly(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    pub = MediaPeer(bus, node.node_id, call_id, "pub", colour=COLOURS[0])
    early = MediaPeer(bus, node.node_id, call_id, "early")
    late = MediaPeer(bus, node.node_id, call_id, "late")
    try:
        for peer in (pub, early, late):
            await peer.open()
        await pub.publish()
        first = await early.subscribe("pub")
        # Two seconds of video: the publisher's opening keyframe is long gone.
        await first.wait_until(lambda f: f.video_frames >= 60, 30)
        feed = await late.subscribe("pub")
        await feed.wait_until(lambda f: f.video_frames >= 1, 5)
        assert feed.first_frame_s is not None and feed.first_frame_s < 1.0, feed.first_frame_s
        assert colour_close(feed.colours[0], pub.colour)
    finally:
        for peer in (late, early, pub):
            await peer.close()


@pytest.mark.slow
async def test_video_recovers_from_packet_loss_toward_a_subscriber(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    pub = MediaPeer(bus, node.node_id, call_id, "pub", colour=COLOURS[1], size=(320, 240))
    sub = MediaPeer(bus, node.node_id, call_id, "sub")
    try:
        await pub.open()
        await sub.open()
        await pub.publish()
        feed = await sub.subscribe("pub", drop_every=8)
        await feed.wait_until(lambda f: f.video_frames >= 90 and f.dropped_packets >= 10, 30)
        assert feed.dropped_packets >= 10
        # Lost packets were retransmitted (NACK/RTX): no long freeze, every picture intact.
        gaps = [b - a for a, b in itertools.pairwise(feed.frame_times[5:])]
        assert max(gaps) < 1.0, max(gaps)
        assert all(colour_close(c, pub.colour) for c in feed.colours[-30:])
    finally:
        await sub.close()
        await pub.close()


@pytest.mark.slow
async def test_tap_publishes_utterances_of_a_speaker_only(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    chunks = await collect(bus, subjects.audio_chunks_of(call_id), AudioChunk)
    speakers = await collect(
        bus,
        subjects.call_event(call_id, ActiveSpeakerChanged.subject_name),
        ActiveSpeakerChanged,
    )
    talker = MediaPeer(bus, node.node_id, call_id, "talker", speaking=True, transcription=True)
    quiet = MediaPeer(bus, node.node_id, call_id, "quiet", speaking=False, transcription=True)
    try:
        for peer in (talker, quiet):
            await peer.open()
            await peer.publish()
        # Two final utterances of the talker (its audio loops 1.2 s speech, 0.8 s silence).
        await chunks.wait(lambda cs: sum(c.is_final for c in cs) >= 2, 20)
        assert {c.participant_id for c in chunks.items} == {"talker"}
        chunk = next(c for c in chunks.items if c.is_final)
        assert chunk.sample_rate == 16000 and chunk.vad == "silero"
        assert len(chunk.pcm) == round((chunk.end_s - chunk.start_s) * 16000) * 2
        assert 0.3 <= chunk.end_s - chunk.start_s <= 3.0
        # The talker became the active speaker (levels from the RTP audio-level extension).
        await speakers.wait(lambda evs: any(e.participant_id == "talker" for e in evs), 10)
        assert all(e.participant_id != "quiet" for e in speakers.items)
    finally:
        await quiet.close()
        await talker.close()


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
    # A request on the wrong verb does not decode as that verb's type.
    publish_subject = subjects.media_rpc(node_id, Publish.verb)
    assert await code_of(publish_subject, OpenSession(call_id="c", participant_id="p")) == (
        "bad_request"
    )
    assert await code_of(publish_subject, Publish(session_id="nope", sdp="v=0")) == "not_found"

    peer = MediaPeer(bus, node_id, f"call-{uid}", "p1")
    await peer.open()
    try:
        bad_sdp = Publish(session_id=peer.session_id, sdp="m=video 9 nonsense\r\n")
        assert await code_of(publish_subject, bad_sdp) == "bad_request"
        two_videos = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        too_many = Publish(session_id=peer.session_id, sdp=two_videos)
        assert await code_of(publish_subject, too_many) == "bad_request"
        # Sections aiortc would take and only fail on later, in a background task (a
        # traceback in the node's log, a half-open connection): refused up front.
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        client.addTransceiver("video", direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        offer = client.localDescription.sdp
        await client.close()
        no_dtls = "\r\n".join(x for x in offer.split("\r\n") if not x.startswith("a=fingerprint"))
        assert await code_of(publish_subject, Publish(session_id=peer.session_id, sdp=no_dtls)) == (
            "bad_request"
        )
        with_data = offer + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:9\r\n"
        assert await code_of(
            publish_subject, Publish(session_id=peer.session_id, sdp=with_data)
        ) == ("bad_request")
        sub_subject = subjects.media_rpc(node_id, Subscribe.verb)
        to_self = Subscribe(session_id=peer.session_id, publisher_id="p1")
        assert await code_of(sub_subject, to_self) == "bad_request"
        nobody = Subscribe(session_id=peer.session_id, publisher_id="ghost")
        assert await code_of(sub_subject, nobody) == "not_found"
        # After all that, the same session still publishes and the node still answers.
        await peer.publish()
        other = MediaPeer(bus, node_id, f"call-{uid}", "p2")
        await other.open()
        feed = await other.subscribe("p1")
        await feed.wait_until(lambda f: f.video_frames >= 5, 20)
        await other.close()
    finally:
        await peer.close()


@pytest.mark.slow
async def test_drain_refuses_new_sessions_and_keeps_current_ones(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}")
    beats = await collect(bus, subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat)
    call_id = f"call-{uid}"
    pub = MediaPeer(bus, node.node_id, call_id, "pub")
    sub = MediaPeer(bus, node.node_id, call_id, "sub")
    try:
        for peer in (pub, sub):
            await peer.open()
        await pub.publish()
        feed = await sub.subscribe("pub")
        await feed.wait_until(lambda f: f.video_frames >= 5, 20)

        node.terminate()
        await beats.wait(
            lambda bs: any(b.node_id == node.node_id and b.state == "draining" for b in bs), 10
        )
        with pytest.raises(RpcFailed) as refused:
            await MediaPeer(bus, node.node_id, call_id, "newcomer").open()
        assert refused.value.code == "draining"
        # Sessions in hand keep their media while draining.
        seen = feed.video_frames
        await feed.wait_until(lambda f: f.video_frames >= seen + 15, 10)
        assert node.proc.returncode is None
    finally:
        await sub.close()
        await pub.close()
    # The last session closed: the node finishes draining long before its deadline.
    assert await node.stop(timeout=15) == 0
    assert not node.tracebacks, node.log_text()
    assert any('"service.stopped"' in line for line in node.lines)


@pytest.mark.slow
async def test_subscriber_keyframe_requests_reach_the_publisher_rate_limited(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    pub = MediaPeer(bus, node.node_id, call_id, "pub")
    sub = MediaPeer(bus, node.node_id, call_id, "sub")
    try:
        await pub.open()
        await sub.open()
        await pub.publish()
        assert pub.publish_pc is not None
        sender = next(s for s in pub.publish_pc.getSenders() if s.kind == "video")
        requests: list[float] = []
        force_keyframe = sender._send_keyframe

        def counted() -> None:
            requests.append(asyncio.get_running_loop().time())
            force_keyframe()

        sender._send_keyframe = counted  # type: ignore[method-assign]
        feed = await sub.subscribe("pub")
        await feed.wait_until(lambda f: f.video_frames >= 30, 20)
        receiver = next(t.receiver for t in feed.pc.getTransceivers() if t.kind == "video")
        ssrc = receiver.getSynchronizationSources()[0].source
        before = len(requests)
        for _ in range(10):  # a burst of PLIs from a lossy subscriber
            await receiver._send_rtcp_pli(ssrc)
        seen = feed.video_frames
        await feed.wait_until(lambda f: f.video_frames >= seen + 20, 10)  # ~0.66 s
        forwarded = len(requests) - before
        # Relayed to the publisher, but at most one per 0.3 s (now + one deferred).
        assert 1 <= forwarded <= 3, forwarded
    finally:
        await sub.close()
        await pub.close()
