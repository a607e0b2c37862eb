import asyncio
import fractions
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media_node.forwarder import ForwardedTrack, ForwardingStats, TrackForwarder

KEY = b"\x10keyframe"
DELTA = b"\x11delta"


def packet(data: bytes, pts: int = 0) -> Any:
    p = av.Packet(data)
    p.pts = pts
    p.time_base = fractions.Fraction(1, 90000)
    return p


def video_track(capacity: int = 64) -> tuple[ForwardedTrack, list[str], ForwardingStats]:
    asked: list[str] = []
    stats = ForwardingStats()
    track = ForwardedTrack("video", on_keyframe_needed=asked.append, stats=stats, capacity=capacity)
    return track, asked, stats


async def drain(track: ForwardedTrack) -> list[bytes]:
    out = []
    while track._frames:
        out.append(bytes(await track.recv()))
    return out


async def test_a_new_video_subscriber_starts_at_a_keyframe() -> None:
    track, asked, stats = video_track()
    track.offer(packet(DELTA), keyframe=False)
    track.offer(packet(DELTA), keyframe=False)
    assert asked == ["waiting_keyframe", "waiting_keyframe"] and stats.frames_held == 2
    track.offer(packet(KEY), keyframe=True)
    track.offer(packet(DELTA), keyframe=False)
    assert await drain(track) == [KEY, DELTA]
    assert not track.waiting_keyframe


async def test_after_a_loss_deltas_are_held_until_the_next_keyframe() -> None:
    track, asked, _ = video_track()
    track.offer(packet(KEY), keyframe=True)
    track.hold_until_keyframe("upstream_loss")
    assert asked == ["upstream_loss"]
    track.offer(packet(DELTA), keyframe=False)
    track.offer(packet(KEY + b"2"), keyframe=True)
    assert await drain(track) == [KEY, KEY + b"2"]


async def test_a_slow_video_reader_drops_to_the_next_keyframe() -> None:
    track, asked, stats = video_track(capacity=3)
    track.offer(packet(KEY), keyframe=True)
    await track.recv()  # it reads, slowly
    for _ in range(3):
        track.offer(packet(DELTA), keyframe=False)
    track.offer(packet(DELTA + b"!"), keyframe=False)  # overflow: queue dropped
    assert "subscriber_queue_full" in asked and stats.frames_dropped == 4
    track.offer(packet(DELTA), keyframe=False)  # still held
    track.offer(packet(KEY), keyframe=True)
    assert await drain(track) == [KEY]


async def test_a_keyframe_overflowing_the_queue_restarts_it_without_a_request() -> None:
    track, asked, stats = video_track(capacity=2)
    track.offer(packet(KEY), keyframe=True)
    track.offer(packet(DELTA), keyframe=False)
    track.offer(packet(KEY + b"2"), keyframe=True)  # overflow, but it is a fresh start
    assert asked == [] and stats.frames_dropped == 2
    assert await drain(track) == [KEY + b"2"]


async def test_a_reader_that_reads_nothing_stops_asking_for_keyframes() -> None:
    """A subscriber that never answered (or whose connection died) must not make its
    publisher send a keyframe every time its queue overflows, for everyone."""
    track, asked, _ = video_track(capacity=3)
    track.offer(packet(KEY), keyframe=True)
    for _ in range(3):
        track.offer(packet(DELTA), keyframe=False)  # the third overflows
    assert track.stalled and asked == []
    for _ in range(10):
        track.offer(packet(DELTA), keyframe=False)  # held, silently
    assert asked == []
    waiter = asyncio.ensure_future(track.recv())  # the sender starts reading
    await asyncio.sleep(0)
    assert asked == ["subscriber_resumed"] and not track.stalled
    track.offer(packet(KEY), keyframe=True)
    assert bytes(await waiter) == KEY


async def test_a_slow_reader_that_still_reads_keeps_asking() -> None:
    track, asked, _ = video_track(capacity=2)
    track.offer(packet(KEY), keyframe=True)
    track.offer(packet(DELTA), keyframe=False)
    await track.recv()
    track.offer(packet(DELTA), keyframe=False)
    track.offer(packet(DELTA), keyframe=False)  # overflow after it read something
    assert asked == ["subscriber_queue_full"] and not track.stalled


async def test_audio_drops_the_oldest_frame_when_full() -> None:
    stats = ForwardingStats()
    track = ForwardedTrack("audio", on_keyframe_needed=lambda _: None, stats=stats, capacity=2)
    for i in range(3):
        track.offer(packet(bytes([i])), keyframe=False)
    assert await drain(track) == [b"\x01", b"\x02"] and stats.frames_dropped == 1


async def test_recv_ends_when_the_track_stops() -> None:
    track, _, _ = video_track()
    waiter = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    track.stop()
    try:
        await asyncio.wait_for(waiter, 1)
    except MediaStreamError:
        pass
    else:
        raise AssertionError("recv should end with MediaStreamError")


class ListSource(MediaStreamTrack):
    kind = "video"

    def __init__(self, items: list[Any]) -> None:
        super().__init__()
        self.items = items

    async def recv(self) -> Any:
        if not self.items:
            raise MediaStreamError
        return self.items.pop(0)


async def test_forwarder_fans_out_to_every_subscriber_and_taps() -> None:
    stats = ForwardingStats()
    subscribers: set[ForwardedTrack] = set()
    tapped: list[bytes] = []
    a = ForwardedTrack("video", on_keyframe_needed=lambda _: None, stats=stats)
    b = ForwardedTrack("video", on_keyframe_needed=lambda _: None, stats=stats)
    subscribers |= {a, b}
    source = ListSource([packet(KEY), packet(DELTA), packet(DELTA)])
    fwd = TrackForwarder(
        source,
        "video",
        subscribers=subscribers,
        stats=stats,
        taps=[lambda p: tapped.append(bytes(p))],
    )
    fwd.start()
    await asyncio.wait_for(fwd._task, 1)  # type: ignore[arg-type]
    assert fwd.frames == 3 and fwd.keyframes == 1 and len(tapped) == 3
    assert await drain(a) == [KEY, DELTA, DELTA] == await drain(b)
    fwd.upstream_lost()
    assert a.waiting_keyframe and b.waiting_keyframe
    await fwd.stop()
