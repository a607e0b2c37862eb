"""Slots and inbound streams on hand-made packets: switching, continuity, repair."""

import itertools
import struct
from typing import Any, cast

from media_node.feed import PublisherClock, PublisherFeed
from media_node.inbound import InboundStats, InboundVideo
from media_node.keyframes import KeyframeRequester
from media_node.rtp import RtpPacket, parse_vp8, seq_delta
from media_node.slot import ForwardingStats, Slot, SlotCodec
from media_node.transport import PacketTransport
from tests.unit.test_media_rtp import vp8_packet


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[RtpPacket] = []

    def send_rtp(self, data: bytes) -> bool:
        packet = RtpPacket(data)
        if packet.payload_type == 96:
            parse_vp8(packet)
        self.sent.append(packet)
        return True


CODEC = SlotCodec(
    payload_type=96,
    clock_rate=90000,
    rtx_payload_type=97,
    mid="0",
    mid_id=1,
    abs_send_time_id=3,
    audio_level_id=0,
)


def feed(pid: str) -> PublisherFeed:
    return PublisherFeed(participant_id=pid, kind="video", clock_rate=90000, clock=PublisherClock())


def slot_with(transport: FakeTransport, showing: list[Slot] | None = None) -> Slot:
    seen = showing if showing is not None else []
    slot = Slot(
        index=0,
        kind="video",
        ssrc=1111,
        rtx_ssrc=2222,
        stats=ForwardingStats(),
        on_showing_changed=seen.append,
    )
    slot.connect(CODEC, cast(PacketTransport, transport))
    return slot


def packet(seq: int, ts: int, *, keyframe: bool = False, pid: int = 0, at: float = 0.0) -> Any:
    p = RtpPacket(vp8_packet(seq=seq, ts=ts, keyframe=keyframe, picture_id=pid), arrival=at)
    parse_vp8(p)
    return p


def test_a_slot_switches_only_at_the_new_publishers_keyframe_and_stays_continuous() -> None:
    out = FakeTransport()
    showing: list[Slot] = []
    slot = slot_with(out, showing)
    alice, bob = feed("alice"), feed("bob")
    slot.assign(alice)
    for i in range(3):
        alice.deliver(packet(100 + i, 3000 * i, keyframe=i == 0, pid=10 + i, at=i / 30))
    assert slot.showing_id == "alice" and len(out.sent) == 3
    slot.assign(bob)
    assert slot.pending is bob and slot.showing_id == "alice"
    bob.deliver(packet(5000, 777, keyframe=False, pid=900, at=0.1))  # a delta: held back
    alice.deliver(packet(103, 9000, pid=13, at=0.1))  # still shown meanwhile
    assert slot.showing_id == "alice" and len(out.sent) == 4
    bob.deliver(packet(5001, 3777, keyframe=True, pid=901, at=0.2))
    bob.deliver(packet(5002, 6777, pid=902, at=0.23))
    alice.deliver(packet(104, 12000, pid=14, at=0.23))  # no longer forwarded
    assert slot.showing_id == "bob" and showing
    seqs = [p.seq for p in out.sent]
    assert all(seq_delta(b, a) == 1 for a, b in itertools.pairwise(seqs)), seqs
    pids = [p.picture_id for p in out.sent]
    assert all((b - a) & 0x7FFF == 1 for a, b in itertools.pairwise(pids)), pids
    assert {p.ssrc for p in out.sent} == {1111}
    switch = out.sent[4]
    assert switch.keyframe
    # The timestamp moves on by the wall-clock time between the two publishers' packets.
    assert 0 < (switch.timestamp - out.sent[3].timestamp) & 0xFFFFFFFF <= 0.2 * 90000
    assert alice.sinks == () and bob.sinks == (slot,)


def test_a_nack_is_answered_as_rtx_from_the_slots_history() -> None:
    out = FakeTransport()
    slot = slot_with(out)
    alice = feed("alice")
    slot.assign(alice)
    for i in range(5):
        alice.deliver(packet(100 + i, 3000 * i, keyframe=i == 0, pid=i))
    lost = out.sent[2]
    out.sent.clear()
    assert slot.retransmit([lost.seq, (lost.seq + 100) & 0xFFFF]) == 1
    (rtx,) = out.sent
    assert rtx.payload_type == 97 and rtx.ssrc == 2222
    assert struct.unpack_from(">H", rtx.data, rtx.payload_start)[0] == lost.seq
    assert rtx.data[rtx.payload_start + 2 :] == lost.data[lost.payload_start :]


def test_a_new_generation_makes_the_slot_wait_for_a_keyframe() -> None:
    out = FakeTransport()
    slot = slot_with(out)
    alice = feed("alice")
    slot.assign(alice)
    alice.deliver(packet(1, 0, keyframe=True))
    alice.deliver(packet(2, 3000))
    alice.new_generation()  # a re-publish: a new stream
    alice.deliver(packet(70, 6000))
    assert len(out.sent) == 2
    alice.deliver(packet(71, 9000, keyframe=True))
    assert len(out.sent) == 3 and seq_delta(out.sent[2].seq, out.sent[1].seq) == 1


def test_inbound_video_nacks_holds_and_releases_in_order() -> None:
    nacks: list[list[int]] = []
    alice = feed("alice")
    got: list[int] = []

    class Sink:
        def write(self, p: RtpPacket, _: PublisherFeed) -> None:
            got.append(p.seq)

    alice.attach(cast(Slot, Sink()))
    inbound = InboundVideo(
        alice,
        payload_type=96,
        rtx_payload_type=97,
        clock_rate=90000,
        stats=InboundStats(),
        send_nack=lambda ssrc, seqs: nacks.append(seqs),
        max_hole_s=0.5,
    )
    inbound.receive(packet(10, 0, keyframe=True, at=0.0))
    inbound.receive(packet(13, 0, at=0.01))  # 11 and 12 lost
    assert got == [10] and nacks == [[11, 12]]
    inbound.receive(packet(12, 0, at=0.02))
    assert got == [10]  # 11 still missing: nothing after it leaves
    inbound.tick(0.2)  # retry the one still missing
    assert nacks[-1] == [11]
    inbound.receive(packet(11, 0, at=0.21))
    assert got == [10, 11, 12, 13]


def test_a_hole_never_filled_is_skipped_with_a_keyframe_request() -> None:
    requested: list[int] = []
    alice = feed("alice")
    alice.keyframes = KeyframeRequester(requested.append, min_interval_s=0.0)
    out = FakeTransport()
    slot = slot_with(out)
    slot.assign(alice)
    inbound = InboundVideo(
        alice,
        payload_type=96,
        rtx_payload_type=97,
        clock_rate=90000,
        stats=InboundStats(),
        send_nack=lambda ssrc, seqs: None,
        max_hole_s=0.5,
    )
    inbound.receive(packet(10, 0, keyframe=True, at=0.0))
    inbound.receive(packet(12, 3000, at=0.05))  # 11 lost for good
    inbound.tick(0.6)
    assert requested  # the node asks the publisher for a keyframe
    assert [p.seq for p in out.sent] == [out.sent[0].seq]  # the delta after the hole is held
    inbound.receive(packet(13, 6000, keyframe=True, at=0.7))
    assert len(out.sent) == 2
    assert seq_delta(out.sent[1].seq, out.sent[0].seq) == 1  # no hole for the subscriber


def test_a_failing_tap_never_stops_audio_forwarding() -> None:
    from media_node.inbound import InboundAudio

    audio = PublisherFeed(
        participant_id="a", kind="audio", clock_rate=48000, clock=PublisherClock()
    )
    got: list[int] = []

    class Sink:
        def write(self, p: RtpPacket, _: PublisherFeed) -> None:
            got.append(p.seq)

    def broken_tap(payload: bytes, timestamp: int) -> None:
        raise RuntimeError("the tap fell over")

    audio.attach(cast(Slot, Sink()))
    stats = InboundStats()
    inbound = InboundAudio(
        audio,
        payload_type=96,
        clock_rate=48000,
        stats=stats,
        audio_level_id=0,
        on_level=lambda level: None,
        tap=broken_tap,
    )
    for seq in range(3):
        inbound.receive(RtpPacket(struct.pack(">BBHII", 0x80, 96, seq, 960 * seq, 9) + b"opus"))
    assert got == [0, 1, 2] and stats.tap_errors == 3


async def test_a_negotiation_step_past_its_deadline_fails_the_request_not_the_node() -> None:
    import asyncio

    import pytest

    from media_node.leg import Leg
    from schemas.bus import RpcFailure

    class FakePc:
        connectionState = "new"
        closed = False

        def on(self, name: str, handler: object) -> None:
            del name, handler

        async def close(self) -> None:
            self.closed = True

    states: list[str] = []
    pc = FakePc()
    leg = Leg(
        pc,
        on_state=lambda leg, state, reason: states.append(f"{state}:{reason}"),
        negotiation_timeout_s=0.05,
        connect_timeout_s=5,
        log_fields={},
    )
    release = asyncio.Event()
    with pytest.raises(RpcFailure) as refused:
        await leg.step(release.wait(), "setLocalDescription")
    assert refused.value.code == "unavailable"
    assert states == ["failed:negotiation_timeout"]
    # The step is not cancelled under aiortc's feet: the close waits for it, then closes.
    release.set()
    await asyncio.wait_for(leg.start_close(), 5)
    assert pc.closed and leg.state == "closed"


def audio_packet(seq: int, ts: int) -> RtpPacket:
    header = struct.pack(">BBHII", 0x80, 111, seq & 0xFFFF, ts & 0xFFFFFFFF, 0xBEEF)
    return RtpPacket(header + b"\xf8" + b"\x00" * 20)


def test_an_audio_slot_keeps_one_speaker_past_the_sequence_wrap() -> None:
    out = FakeTransport()
    slot = Slot(
        index=0,
        kind="audio",
        ssrc=3333,
        rtx_ssrc=0,
        stats=ForwardingStats(),
        on_showing_changed=lambda _: None,
    )
    slot.connect(
        SlotCodec(
            payload_type=111,
            clock_rate=48000,
            rtx_payload_type=None,
            mid="1",
            mid_id=1,
            abs_send_time_id=0,
            audio_level_id=0,
        ),
        cast(PacketTransport, out),
    )
    alice = PublisherFeed(
        participant_id="a", kind="audio", clock_rate=48000, clock=PublisherClock()
    )
    slot.assign(alice)
    sent = 0
    for i in range(70_000):  # more than two trips round the 16-bit sequence space
        alice.deliver(audio_packet(1000 + i, 960 * i))
        sent += 1
    assert len(out.sent) == sent
    # A packet from before the switch point (reordered) is still kept out.
    slot.assign(None)
    slot.assign(alice)
    before = len(out.sent)
    alice.deliver(audio_packet(1000 + 70_000, 960 * 70_000))
    alice.deliver(audio_packet(1000 + 69_990, 960 * 69_990))
    assert len(out.sent) == before + 1


def test_a_closed_slot_never_attaches_to_a_feed_again() -> None:
    out = FakeTransport()
    slot = slot_with(out)
    alice = feed("alice")
    slot.close()
    slot.assign(alice)
    assert alice.sinks == () and slot.assigned is None


def test_a_nack_repeating_a_sequence_gets_it_resent_once() -> None:
    out = FakeTransport()
    slot = slot_with(out)
    alice = feed("alice")
    slot.assign(alice)
    for i in range(5):
        alice.deliver(packet(100 + i, 3000 * i, keyframe=i == 0, pid=i))
    lost = out.sent[2]
    out.sent.clear()
    assert slot.retransmit([lost.seq] * 1000) == 1
