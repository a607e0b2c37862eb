"""A video jitter buffer that releases a frame as soon as its last packet is in.

aiortc's ``JitterBuffer`` releases a frame only when the first packet of the *next* frame
arrives (it ignores the RTP marker bit), which adds one frame interval (~33 ms at 30 fps)
at every hop. On the SFU's inbound video, :class:`MarkerJitterBuffer` also releases a
frame once the packet carrying the marker bit (the last packet of a VP8 frame) is in and
every packet of that frame, from the buffer's origin on, is present (checked on every
packet, so a retransmission filling the last hole releases the frame at once).

It also bounds how long a hole may block the stream. aiortc's NACK generator asks for a lost
packet once; if the retransmission is lost too, aiortc's buffer waits until it overflows
(512 packets: many seconds of frozen video). Here a hole older than ``max_hole_s`` makes the
buffer drop the damaged frame and report picture loss (``pli_flag``): the receiver sends a
PLI, the SFU holds delta frames back for every subscriber until the keyframe arrives.
Everything else (reordering, capacity, PLI on overflow) is aiortc's unchanged behaviour.
"""

import time
from collections.abc import Callable
from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from media_node.keyframes import is_vp8_keyframe
from schemas.logs import get_logger

log = get_logger("media_node.jitter")

_PRIVATE_ATTR = "_RTCRtpReceiver__jitter_buffer"


class MarkerJitterBuffer(JitterBuffer):
    """``JitterBuffer`` plus early release on the marker bit and a bounded hole wait."""

    def __init__(
        self,
        capacity: int,
        prefetch: int = 0,
        is_video: bool = False,
        *,
        max_hole_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        log_fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        self.max_hole_s = max_hole_s
        self._clock = clock
        self._log_fields = log_fields or {}
        self._hole_seq: int | None = None
        self._hole_since = 0.0
        self.frames_skipped = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if frame is None and self._is_video:
            frame = self._release_complete_frame()
            if frame is None and self._hole_too_old(packet):
                pli_flag = self._skip_damaged_frame() or pli_flag
                frame = self._release_complete_frame()
        return pli_flag, frame

    def _first_hole(self, packet: RtpPacket) -> int | None:
        """Offset from the origin of the first missing packet before ``packet``, if any."""
        assert self._origin is not None
        delta = uint16_add(packet.sequence_number, -self._origin)
        if delta >= self.capacity:
            return -1  # a late packet from before the origin: tells us nothing
        for offset in range(delta):
            if self._packets[(self._origin + offset) % self.capacity] is None:
                return offset
        return None

    def _hole_too_old(self, packet: RtpPacket) -> bool:
        """True when a packet the next frame needs has been missing for ``max_hole_s``."""
        if self._origin is None:
            return False
        offset = self._first_hole(packet)
        if offset == -1:
            return False
        if offset is None:
            self._hole_seq = None
            return False
        seq = uint16_add(self._origin, offset)
        now = self._clock()
        if self._hole_seq != seq:
            self._hole_seq, self._hole_since = seq, now
            return False
        return now - self._hole_since >= self.max_hole_s

    def _skip_damaged_frame(self) -> bool:
        """Drop the damaged frame and the frames buffered after it; True if anything was.

        Frames after a lost one are undecodable until the next keyframe, and releasing them
        one per arriving packet would only delay that keyframe; so they go too, unless a
        keyframe is already buffered (the buffer then restarts from it).
        """
        assert self._origin is not None and self._hole_seq is not None
        hole = uint16_add(self._hole_seq, -self._origin)
        cut: int | None = None
        previous: RtpPacket | None = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None:
                previous = None
                continue
            starts_frame = previous is not None and (
                previous.marker or previous.timestamp != packet.timestamp
            )
            data = packet._data  # type: ignore[attr-defined]
            if count > hole and starts_frame and is_vp8_keyframe(data):
                cut = count  # keep the keyframe
                break
            if count > hole and packet.marker:
                cut = count + 1
            previous = packet
        if cut is None:
            return False
        self.remove(cut)
        self._hole_seq = None
        self.frames_skipped += 1
        log.info("jitter.frames_skipped", waited_s=self.max_hole_s, packets=cut, **self._log_fields)
        return True

    def _release_complete_frame(self) -> JitterFrame | None:
        """Release the frame at the origin if all its packets up to the marker are in.

        Checked on every packet, so a retransmission that fills a hole releases the frame.
        """
        if self._origin is None:
            return None
        packets: list[RtpPacket] = []
        timestamp: int | None = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return None  # a hole, or a frame without its marker: aiortc's rule decides
            timestamp = packet.timestamp
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
                return JitterFrame(data=data, timestamp=timestamp)
        return None


def use_marker_jitter_buffer(
    receiver: Any, *, max_hole_s: float = 0.5, log_fields: dict[str, str] | None = None
) -> bool:
    """Swap a video receiver's jitter buffer before any packet arrived; False if not possible.

    The buffer is a private attribute of ``RTCRtpReceiver``; if a future aiortc renames it,
    this returns False and the receiver keeps aiortc's buffer (one frame more latency).
    """
    current = getattr(receiver, _PRIVATE_ATTR, None)
    if not isinstance(current, JitterBuffer) or current._origin is not None:
        log.warning(
            "jitter.not_swapped",
            reason="unexpected receiver internals or packets seen",
            **(log_fields or {}),
        )
        return False
    buffer = MarkerJitterBuffer(
        current.capacity, is_video=True, max_hole_s=max_hole_s, log_fields=log_fields
    )
    setattr(receiver, _PRIVATE_ATTR, buffer)
    return True
