"""Fan one publisher's encoded track out to N subscribers without re-encoding.

One :class:`TrackForwarder` reads a publisher's track (``av.Packet`` s from
:mod:`media_node.passthrough`) and offers every packet to each :class:`ForwardedTrack`.
A subscriber's ``RTCRtpSender`` reads its ``ForwardedTrack`` and only packetises: it gives
each subscriber its own SSRC, sequence numbers, RTP timestamps (the publisher's timing, from
a per-sender random origin) and VP8 picture ids, and answers that subscriber's NACKs from its
own history.

Video integrity: once a subscriber misses a frame (a new subscriber, a full queue, or the SFU
losing data upstream), the frames after it reference a picture the subscriber never got.
``pack()`` numbers pictures consecutively, so the subscriber cannot even see the hole. The
track therefore holds delta frames back until the next keyframe and asks for one.
"""

import asyncio
import collections
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media_node.keyframes import is_vp8_keyframe
from schemas.logs import get_logger

log = get_logger("media_node.forwarder")


@dataclass(slots=True)
class ForwardingStats:
    """Counters shared by every forwarder of a node (read by the heartbeat)."""

    frames_in: int = 0
    frames_forwarded: int = 0
    frames_dropped: int = 0
    frames_held: int = 0


class ForwardedTrack(MediaStreamTrack):
    """What one subscriber's sender reads: the publisher's encoded frames, gated.

    The queue is bounded: a sender that cannot keep up loses the oldest frames (audio) or
    the queue and every delta frame until the next keyframe (video).

    A video reader that read nothing since its queue last overflowed is *stalled* (a
    subscriber that never answered, or whose connection died): it stops asking the
    publisher for keyframes, which every subscriber of that publisher would pay for, and
    asks again once it reads.
    """

    def __init__(
        self,
        kind: str,
        *,
        on_keyframe_needed: Callable[[str], None],
        stats: ForwardingStats,
        capacity: int = 64,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._on_keyframe_needed = on_keyframe_needed
        self._stats = stats
        self._capacity = capacity
        self._frames: collections.deque[Any] = collections.deque()
        self._ready = asyncio.Event()
        # A new video subscriber can only start at a keyframe.
        self._waiting_keyframe = kind == "video"
        self.delivered = 0
        self._delivered_at_overflow = 0
        self.stalled = False

    @property
    def waiting_keyframe(self) -> bool:
        return self._waiting_keyframe

    def hold_until_keyframe(self, reason: str) -> None:
        """Drop delta frames from now on until a keyframe arrives, and ask for one."""
        if self.kind != "video":
            return
        self._waiting_keyframe = True
        self._on_keyframe_needed(reason)

    def offer(self, packet: Any, keyframe: bool) -> None:
        """Queue one encoded frame for this subscriber (event loop, never blocks)."""
        if self.readyState != "live":
            return
        if self._waiting_keyframe:
            if not keyframe:
                self._stats.frames_held += 1
                if not self.stalled:
                    self._on_keyframe_needed("waiting_keyframe")
                return
            self._waiting_keyframe = False
        if len(self._frames) >= self._capacity:
            if self.kind == "video":
                # Everything queued would decode against a picture we are about to lose.
                self._stats.frames_dropped += len(self._frames)
                self._frames.clear()
                if not keyframe:
                    self._stats.frames_dropped += 1  # this delta goes too
                    self.stalled = self.delivered == self._delivered_at_overflow
                    self._delivered_at_overflow = self.delivered
                    self._waiting_keyframe = True
                    if not self.stalled:
                        self._on_keyframe_needed("subscriber_queue_full")
                    return
                # A keyframe restarts the picture by itself: no request needed.
            else:
                self._stats.frames_dropped += 1
                self._frames.popleft()
        self._frames.append(packet)
        self._ready.set()

    async def recv(self) -> Any:
        if self.stalled:
            # Reading again (the sender started, or caught up): now a keyframe helps.
            self.stalled = False
            self._on_keyframe_needed("subscriber_resumed")
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        self.delivered += 1
        self._stats.frames_forwarded += 1
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._frames.clear()
        self._ready.set()


class TrackForwarder:
    """Reads one publisher track and offers each frame to every subscriber's track."""

    def __init__(
        self,
        source: MediaStreamTrack,
        kind: str,
        *,
        subscribers: set[ForwardedTrack],
        stats: ForwardingStats,
        taps: list[Callable[[Any], None]] | None = None,
        log_fields: dict[str, str] | None = None,
    ) -> None:
        self.source = source
        self.kind = kind
        #: Shared with the publisher's session, so subscriptions made before the
        #: publisher published are picked up.
        self.subscribers = subscribers
        self._stats = stats
        self._taps = taps or []
        self._log_fields = log_fields or {}
        self._task: asyncio.Task[None] | None = None
        self.frames = 0
        self.keyframes = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"forward:{self.kind}"
        )

    def upstream_lost(self) -> None:
        """The SFU lost part of the publisher's stream: every subscriber needs a keyframe."""
        for track in list(self.subscribers):
            track.hold_until_keyframe("upstream_loss")

    async def _run(self) -> None:
        video = self.kind == "video"
        try:
            while True:
                packet = await self.source.recv()
                self.frames += 1
                self._stats.frames_in += 1
                keyframe = False
                if video:
                    keyframe = is_vp8_keyframe(memoryview(packet))  # type: ignore[arg-type]
                    self.keyframes += keyframe
                for track in tuple(self.subscribers):
                    track.offer(packet, keyframe)
                for tap in self._taps:
                    tap(packet)
        except MediaStreamError:
            log.info("forwarder.source_ended", kind=self.kind, **self._log_fields)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "forwarder.failed", kind=self.kind, error=type(exc).__name__, **self._log_fields
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
