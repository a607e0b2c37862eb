"""Media node faults: sessions left open at drain, participants leaving mid-call."""

import asyncio
import itertools
import time

import pytest

from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.call_events import ActiveSpeakerChanged
from schemas.media import MediaNodeHeartbeat
from tests.support.media_peer import MediaPeer, NodeProcess
from tests.support.nats_server import NatsServer
from tests.support.waiting import until


@pytest.mark.slow
async def test_drain_deadline_ends_sessions_that_never_close(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}", {"DRAIN_TIMEOUT_S": "1.5"})
    call_id = f"call-{uid}"
    pub = MediaPeer(bus, node.node_id, call_id, "pub")
    sub = MediaPeer(bus, node.node_id, call_id, "sub")
    try:
        await pub.open()
        await sub.open()
        await pub.publish()
        feed = await sub.subscribe("pub")
        await feed.wait_until(lambda f: f.video_frames >= 5, 20)
        started = time.monotonic()
        node.terminate()
        assert await node.stop(timeout=15) == 0
        assert time.monotonic() - started < 8
        assert any('"service.drain_deadline"' in line for line in node.lines)
        assert not node.tracebacks, node.log_text()
    finally:
        await sub.close(tell_node=False)
        await pub.close(tell_node=False)


@pytest.mark.slow
async def test_a_speaker_leaving_ends_its_streams_and_clears_the_active_speaker(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}")
    call_id = f"call-{uid}"
    beats: list[MediaNodeHeartbeat] = []
    speakers: list[ActiveSpeakerChanged] = []
    changed = asyncio.Event()

    async def on_beat(beat: MediaNodeHeartbeat, _: Incoming) -> None:
        if beat.node_id == node.node_id:
            beats.append(beat)
            changed.set()

    async def on_speaker(event: ActiveSpeakerChanged, _: Incoming) -> None:
        speakers.append(event)
        changed.set()

    await bus.subscribe(subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat, on_beat)
    speaker_subject = subjects.call_event(call_id, ActiveSpeakerChanged.subject_name)
    await bus.subscribe(speaker_subject, ActiveSpeakerChanged, on_speaker)
    talker = MediaPeer(bus, node.node_id, call_id, "talker", speaking=True)
    listener = MediaPeer(bus, node.node_id, call_id, "listener", speaking=False)
    try:
        for peer in (talker, listener):
            await peer.open()
            await peer.publish()
        feed = await listener.subscribe("talker")
        await listener_feed_ready(feed)
        await until(lambda: any(e.participant_id == "talker" for e in speakers), changed, 10)
        # The talker vanishes: it closes its session (as the gateway does on leave).
        await talker.close()
        await until(
            lambda: any(
                e.participant_id is None and e.previous_participant_id == "talker" for e in speakers
            ),
            changed,
            10,
        )
        await until(
            lambda: (
                bool(beats) and beats[-1].participants == 1 and beats[-1].forwarded_streams == 0
            ),
            changed,
            10,
        )
        # The node still serves the call.
        newcomer = MediaPeer(bus, node.node_id, call_id, "newcomer")
        await newcomer.open()
        await newcomer.publish()
        again = await listener.subscribe("newcomer")
        await again.wait_until(lambda f: f.video_frames >= 5, 20)
        await newcomer.close()
    finally:
        await listener.close()
        await talker.close()
    assert await node.stop() == 0
    assert not node.tracebacks, node.log_text()


async def listener_feed_ready(feed: object) -> None:
    from tests.support.media_peer import RemoteFeed

    assert isinstance(feed, RemoteFeed)
    await feed.wait_until(lambda f: f.video_frames >= 5 and f.audio_frames >= 5, 20)


@pytest.mark.slow
async def test_a_lost_retransmission_upstream_freezes_video_only_briefly(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    """Publisher -> SFU loses a packet *and* its retransmission: the node must not wait for
    ever (aiortc's buffer would, until 512 packets later); it drops the frame, asks for a
    keyframe and holds deltas back, so subscribers see a short freeze, never a broken
    picture."""

    from tests.support.media_peer import colour_close

    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}")
    call_id = f"call-{uid}"
    pub = MediaPeer(bus, node.node_id, call_id, "pub", colour=(200, 200, 30), size=(320, 240))
    sub = MediaPeer(bus, node.node_id, call_id, "sub")
    try:
        await pub.open()
        await sub.open()
        await pub.publish()
        feed = await sub.subscribe("pub")
        await feed.wait_until(lambda f: f.video_frames >= 30, 20)

        assert pub.publish_pc is not None
        transceiver = next(t for t in pub.publish_pc.getTransceivers() if t.kind == "video")
        codecs = transceiver._codecs
        media_pt = codecs[0].payloadType
        rtx_pts = {c.payloadType for c in codecs if c.mimeType.lower() == "video/rtx"}
        assert rtx_pts, "RTX should be negotiated"
        transport = transceiver.sender.transport
        send_rtp = transport._send_rtp
        dropped: list[int] = []
        armed_at = time.monotonic()

        async def lossy(data: bytes) -> None:
            payload_type = data[1] & 0x7F
            if len(data) > 12 and not 192 <= data[1] <= 223:  # RTP, not RTCP
                if payload_type == media_pt and not dropped:
                    dropped.append(int.from_bytes(data[2:4], "big"))
                    return  # the original
                if payload_type in rtx_pts and time.monotonic() - armed_at < 5:
                    dropped.append(-1)
                    return  # ...and every retransmission of it
            await send_rtp(data)

        transport._send_rtp = lossy  # type: ignore[method-assign]
        seen = feed.video_frames
        await feed.wait_until(lambda f: f.video_frames >= seen + 60, 15)
        assert dropped and dropped.count(-1) >= 1, dropped  # a retransmission was lost too
        # From the last frame before the loss to the end.
        before = [t for t in feed.frame_times if t < armed_at][-1:]
        times = before + [t for t in feed.frame_times if t >= armed_at]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # A freeze of about MEDIA_NODE_MAX_HOLE_S (0.5 s) plus a keyframe's round trip.
        assert max(gaps) < 1.5, max(gaps)
        assert all(colour_close(c, pub.colour) for c in feed.colours[-30:])
        assert any('"jitter.frames_skipped"' in line for line in node.lines)
    finally:
        await sub.close()
        await pub.close()
    assert await node.stop() == 0
    assert not node.tracebacks, node.log_text()
