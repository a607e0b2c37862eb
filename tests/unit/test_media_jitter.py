from typing import Any

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from media_node.jitter import MarkerJitterBuffer, use_marker_jitter_buffer


def rtp(seq: int, ts: int, marker: bool, data: bytes) -> RtpPacket:
    packet = RtpPacket(sequence_number=seq, timestamp=ts, marker=int(marker))
    packet._data = data  # type: ignore[attr-defined]
    return packet


def test_a_frame_is_released_on_its_marker_packet() -> None:
    buf = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buf.add(rtp(10, 1000, False, b"a")) == (False, None)
    _, frame = buf.add(rtp(11, 1000, True, b"b"))
    assert frame is not None and frame.data == b"ab" and frame.timestamp == 1000
    # The next frame does not re-release the previous one.
    _, frame = buf.add(rtp(12, 4000, True, b"c"))
    assert frame is not None and frame.data == b"c"


def test_a_hole_waits_for_the_retransmission() -> None:
    buf = MarkerJitterBuffer(capacity=128, is_video=True)
    buf.add(rtp(20, 1000, False, b"a"))
    assert buf.add(rtp(22, 1000, True, b"c")) == (False, None)  # 21 missing
    _, frame = buf.add(rtp(21, 1000, False, b"b"))  # the retransmission completes it
    assert frame is not None and frame.data == b"abc"
    _, frame = buf.add(rtp(23, 4000, True, b"d"))
    assert frame is not None and frame.data == b"d"


def test_aiortc_buffer_waits_for_the_next_frame() -> None:
    plain = JitterBuffer(capacity=128, is_video=True)
    assert plain.add(rtp(10, 1000, True, b"a")) == (False, None)


class FakeReceiver:
    def __init__(self) -> None:
        self._RTCRtpReceiver__jitter_buffer: Any = JitterBuffer(capacity=512, is_video=True)


def test_swap_only_before_packets_arrive() -> None:
    receiver = FakeReceiver()
    assert use_marker_jitter_buffer(receiver)
    assert isinstance(receiver._RTCRtpReceiver__jitter_buffer, MarkerJitterBuffer)
    busy = FakeReceiver()
    busy._RTCRtpReceiver__jitter_buffer.add(rtp(1, 1, False, b"x"))
    assert not use_marker_jitter_buffer(busy)
    assert not use_marker_jitter_buffer(object())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_hole_whose_retransmission_never_comes_is_skipped_with_a_pli() -> None:
    clock = Clock()
    buf = MarkerJitterBuffer(capacity=128, is_video=True, max_hole_s=0.5, clock=clock)
    buf.add(rtp(30, 1000, False, b"a"))
    # 31 is lost for good; the rest of frame 1000 and frame 4000 arrive.
    assert buf.add(rtp(32, 1000, True, b"c")) == (False, None)
    clock.now = 0.1
    assert buf.add(rtp(33, 4000, True, b"\x11d")) == (False, None)
    clock.now = 0.3
    assert buf.add(rtp(34, 7000, True, b"\x11e")) == (False, None)  # still within max_hole_s
    clock.now = 0.7
    pli, frame = buf.add(rtp(35, 10000, True, b"\x11f"))
    # Frame 1000 and the deltas after it are dropped, picture loss reported.
    assert pli and frame is None and buf.frames_skipped == 1
    # A late retransmission of 31 is not stored; the stream flows again.
    assert buf.add(rtp(31, 1000, False, b"b")) == (False, None)
    _, frame = buf.add(rtp(36, 13000, True, b"\x10key"))
    assert frame is not None and frame.data == b"\x10key"


def test_a_skip_keeps_a_keyframe_already_buffered() -> None:
    clock = Clock()
    buf = MarkerJitterBuffer(capacity=128, is_video=True, max_hole_s=0.5, clock=clock)
    buf.add(rtp(50, 1000, True, b"\x10k0"))  # released at once
    buf.add(rtp(52, 4000, True, b"\x11d2"))  # 51 lost for good
    buf.add(rtp(53, 7000, True, b"\x10k3"))  # a keyframe behind the hole
    clock.now = 0.6
    pli, frame = buf.add(rtp(54, 10000, True, b"\x11d4"))
    assert pli and frame is not None and frame.data == b"\x10k3"
    _, frame = buf.add(rtp(55, 13000, True, b"\x11d5"))
    assert frame is not None and frame.data == b"\x11d4"
