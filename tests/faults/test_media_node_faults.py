"""Media node faults: drain deadlines, speakers leaving, lost retransmissions, churn."""

import asyncio
import itertools
import random
import time

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import ActiveSpeakerChanged
from schemas.media import MediaNodeHeartbeat
from schemas.media_events import SessionClosed
from tests.support.media_peer import NodeProcess, colour_close
from tests.support.nats_server import NatsServer
from tests.support.sfu_client import NatsSfuTransport, SfuClient
from tests.support.waiting import Collector


async def collect(bus: Bus, subject: str, type_: type) -> Collector:  # type: ignore[type-arg]
    collector: Collector = Collector()  # type: ignore[type-arg]
    await bus.subscribe(subject, type_, collector)
    await bus.flush()
    return collector


@pytest.mark.slow
async def test_drain_deadline_ends_sessions_that_never_close(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}", {"DRAIN_TIMEOUT_S": "1.5"})
    call_id = f"call-{uid}"
    closed = await collect(bus, subjects.media_event(call_id, "session_closed"), SessionClosed)
    transport = NatsSfuTransport(bus, node.node_id)
    pub = SfuClient(transport, call_id, "pub", colour=(200, 30, 30))
    sub = SfuClient(transport, call_id, "sub", colour=(30, 200, 30))
    try:
        await pub.join()
        await sub.join()
        await sub.wait_for(lambda c: len(c.slots[0].frames) >= 5, 20)
        node.terminate()
        assert await node.stop(timeout=15) == 0
        # It stopped because the drain deadline passed (its sessions never closed), which
        # its log says; how long that took is a figure, not a test.
        assert any('"service.drain_deadline"' in line for line in node.lines)
        assert not node.tracebacks, node.log_text()
        # Both sessions were told why they ended.
        await closed.wait(lambda evs: len(evs) == 2, 5)
        assert {e.reason for e in closed.items} == {"node_draining"}
    finally:
        await sub.leave(tell_node=False)
        await pub.leave(tell_node=False)


@pytest.mark.slow
async def test_a_speaker_leaving_frees_its_slots_and_clears_the_active_speaker(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}")
    call_id = f"call-{uid}"
    beats = await collect(bus, subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat)
    speakers = await collect(
        bus, subjects.call_event(call_id, ActiveSpeakerChanged.subject_name), ActiveSpeakerChanged
    )
    transport = NatsSfuTransport(bus, node.node_id)
    talker = SfuClient(transport, call_id, "talker", colour=(200, 30, 30), speaking=True)
    listener = SfuClient(transport, call_id, "listener", colour=(30, 200, 30))
    try:
        await talker.join()
        await listener.join()
        await listener.wait_for(lambda c: c.showing() == {"talker"}, 20)
        await speakers.wait(lambda evs: any(e.participant_id == "talker" for e in evs), 10)
        await talker.leave()
        await speakers.wait(
            lambda evs: any(
                e.participant_id is None and e.previous_participant_id == "talker" for e in evs
            ),
            10,
        )
        await listener.wait_for(lambda c: not c.showing() and not c.assigned(), 10)
        await beats.wait(
            lambda bs: any(
                b.node_id == node.node_id and b.participants == 1 and b.forwarded_streams == 0
                for b in bs
            ),
            10,
        )
        # The node still serves the call.
        newcomer = SfuClient(transport, call_id, "newcomer", colour=(30, 30, 200))
        await newcomer.join()
        await listener.wait_for(lambda c: c.showing() == {"newcomer"}, 20)
        await newcomer.leave()
    finally:
        await listener.leave()
        await talker.leave()
    assert await node.stop() == 0
    assert not node.tracebacks, node.log_text()


@pytest.mark.slow
async def test_a_lost_retransmission_upstream_freezes_video_only_briefly(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    """Publisher -> SFU loses a packet *and* its retransmissions: the node must not wait for
    ever; it gives up on the hole after MEDIA_NODE_MAX_HOLE_S, asks for a keyframe and
    holds delta frames back, so subscribers see a short freeze, never a broken picture
    (and never a hole in the slot's sequence numbers)."""
    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}")
    call_id = f"call-{uid}"
    transport = NatsSfuTransport(bus, node.node_id)
    pub = SfuClient(transport, call_id, "pub", colour=(200, 200, 30), size=(320, 240), fps=30)
    sub = SfuClient(transport, call_id, "sub", video_slots=1, audio_slots=1)
    try:
        await pub.join()
        await sub.join()
        await sub.wait_for(lambda c: len(c.slots[0].frames) >= 30, 20)
        assert pub.uplink is not None
        transceiver = next(t for t in pub.uplink.getTransceivers() if t.kind == "video")
        codecs = transceiver._codecs
        media_pt = codecs[0].payloadType
        rtx_pts = {c.payloadType for c in codecs if c.mimeType.lower() == "video/rtx"}
        assert rtx_pts, "RTX should be negotiated"
        dtls = transceiver.sender.transport
        send_rtp = dtls._send_rtp
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

        dtls._send_rtp = lossy  # type: ignore[method-assign]
        seen = len(sub.slots[0].frames)
        await sub.wait_for(lambda c: len(c.slots[0].frames) >= seen + 60, 15)
        assert dropped and dropped.count(-1) >= 1, dropped  # a retransmission was lost too
        frames = sub.slots[0].frames
        before = [t for t, _, _ in frames if t < armed_at][-1:]
        times = before + [t for t, _, _ in frames if t >= armed_at]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # A freeze of about MEDIA_NODE_MAX_HOLE_S (0.5 s) plus a keyframe's round trip.
        assert max(gaps) < 1.5, max(gaps)
        assert all(colour_close(c, pub.colour) for _, c, _ in frames[-30:])
        assert any('"inbound.hole_skipped"' in line for line in node.lines)
    finally:
        await sub.leave()
        await pub.leave()
    assert await node.stop() == 0
    assert not node.tracebacks, node.log_text()


@pytest.mark.slow
async def test_fifty_sessions_churn_and_close_without_leaks(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    """50 sessions in one call open in bursts, leave and rejoin in bursts, and close: the
    node's peer connections, UDP ports and tasks return to where they started."""
    node = await NodeProcess.start(bus, nats_server.url, f"media-{uid}")
    call_id = f"call-{uid}"
    beats = await collect(bus, subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat)
    transport = NatsSfuTransport(bus, node.node_id)

    def mine(b: MediaNodeHeartbeat) -> bool:
        return b.node_id == node.node_id

    await beats.wait(lambda bs: any(mine(b) and b.udp_ports >= 0 for b in bs), 10)
    baseline = next(b for b in reversed(beats.items) if mine(b))
    rng = random.Random(7)
    # A few send media the whole time (forwarding runs through the churn); the others are
    # pre-warmed sessions, connected but sending nothing, which keeps 2 cores able to run
    # 100 client peer connections next to the node.
    senders = {f"m{i:02d}" for i in range(3)}

    def client(pid: str) -> SfuClient:
        return SfuClient(
            transport,
            call_id,
            pid,
            colour=(rng.randrange(256), rng.randrange(256), rng.randrange(256)),
            prewarm=pid not in senders,
            decode=False,
            video_slots=3,
            audio_slots=2,
        )

    present: dict[str, SfuClient] = {}
    try:
        names = [f"m{i:02d}" for i in range(50)]
        for start in range(0, len(names), 10):
            burst = names[start : start + 10]
            joining = [client(pid) for pid in burst]
            await asyncio.gather(*(c.join() for c in joining))
            present.update((c.participant_id, c) for c in joining)
        await beats.wait(lambda bs: any(mine(b) and b.participants == 50 for b in bs), 30)
        watcher = present["m03"]
        await watcher.wait_for(lambda c: c.showing() == senders, 30)
        for _ in range(3):  # leave and come back, in bursts
            leaving = rng.sample(sorted(set(present) - senders - {"m03"}), 10)
            await asyncio.gather(*(present.pop(pid).leave() for pid in leaving))
            back = [client(pid) for pid in leaving]
            await asyncio.gather(*(c.join() for c in back))
            present.update((c.participant_id, c) for c in back)
        await beats.wait(
            lambda bs: any(
                mine(b) and b.participants == 50 and b.peer_connections == 100 for b in bs
            ),
            30,
        )
        # Forwarding went on through the churn.
        counted = sum(s.packets for s in watcher.slots)
        await watcher.wait_for(lambda c: sum(s.packets for s in c.slots) > counted + 50, 10)
    finally:
        await asyncio.gather(*(c.leave() for c in present.values()))
    await beats.wait(
        lambda bs: any(
            mine(b)
            and b.participants == 0
            and b.peer_connections == 0
            and b.udp_ports == baseline.udp_ports
            and b.tasks <= baseline.tasks
            for b in bs
        ),
        30,
    )
    assert await node.stop() == 0
    assert not node.tracebacks, node.log_text()
