"""One send-only m-line of a downlink: whose media it carries, rewritten as its own stream.

A slot has its own SSRC (and RTX SSRC), negotiated once. Whatever publisher it shows, the
subscriber sees one continuous stream: sequence numbers, RTP timestamps and VP8 picture
ids continue across switches (new offsets at each switch: sequence = last + 1, timestamp =
last + elapsed time, picture id = last + 1), header extensions are the slot's own (mid,
a fresh abs-send-time, the publisher's audio level copied), and sender reports carry the
slot's own counts with a timestamp mapping taken from the publisher's sender reports.

Switching (make-before-break): :meth:`Slot.assign` makes the new publisher *pending* and
asks it for a keyframe; the slot keeps forwarding the old publisher until the new one's
keyframe arrives, then switches on that packet. A video slot that lost sync (a new
uplink, a hole the node could not repair upstream, a fault) drops delta frames until the
next keyframe and asks for one: a subscriber never gets a frame that references a picture
it did not receive. Audio slots switch at the next packet.

NACKs from the subscriber are answered from the slot's history of rewritten packets
(keyed by the slot's sequence number), as RTX when negotiated. The history keeps
references to the publisher's packets (shared by every slot showing them), not copies.
"""

import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from media_node import rtcp
from media_node.feed import PublisherFeed
from media_node.rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    HeaderTemplate,
    RtpPacket,
    seq_delta,
)
from media_node.transport import PacketTransport
from schemas.logs import get_logger

log = get_logger("media_node.slot")

_U16 = struct.Struct(">H")
_EMPTY: tuple[Any, ...] = ()
#: How far the audio sync point trails the newest packet forwarded (see Slot.write).
_SYNC_TRAIL = 8192
#: The most packets one NACK gets resent (libwebrtc asks for far fewer at once).
_MAX_NACKED = 128


@dataclass(slots=True)
class ForwardingStats:
    """Counters shared by every slot of a node (read by the heartbeat)."""

    packets_forwarded: int = 0
    packets_dropped: int = 0
    frames_forwarded: int = 0
    frames_held: int = 0
    retransmissions: int = 0
    errors: int = 0
    switches: int = 0


@dataclass(frozen=True, slots=True)
class SlotCodec:
    """What the downlink negotiated for one slot (from aiortc's send parameters)."""

    payload_type: int
    clock_rate: int
    rtx_payload_type: int | None
    mid: str
    mid_id: int
    abs_send_time_id: int
    audio_level_id: int

    @classmethod
    def from_parameters(cls, parameters: Any) -> "SlotCodec":
        codecs = list(parameters.codecs)
        if not codecs:
            raise ValueError("no codec negotiated")
        media = codecs[0]
        rtx = next(
            (
                c.payloadType
                for c in codecs
                if c.mimeType.lower().endswith("/rtx")
                and c.parameters.get("apt") == media.payloadType
            ),
            None,
        )
        ids = {ext.uri: ext.id for ext in parameters.headerExtensions}
        return cls(
            payload_type=media.payloadType,
            clock_rate=media.clockRate,
            rtx_payload_type=rtx,
            mid=parameters.muxId or "",
            mid_id=ids.get(URI_MID, 0),
            abs_send_time_id=ids.get(URI_ABS_SEND_TIME, 0),
            audio_level_id=ids.get(URI_AUDIO_LEVEL, 0),
        )


ShowingChanged = Callable[["Slot"], None]


class Slot:
    """See the module docstring."""

    def __init__(
        self,
        *,
        index: int,
        kind: str,
        ssrc: int,
        rtx_ssrc: int,
        stats: ForwardingStats,
        on_showing_changed: ShowingChanged,
        history_size: int = 512,
        log_fields: dict[str, str] | None = None,
    ) -> None:
        self.index = index
        self.kind = kind
        self.video = kind == "video"
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.mid = ""
        self._stats = stats
        self._on_showing_changed = on_showing_changed
        self._log_fields = log_fields or {}
        #: Whom the node assigned to this slot, and whose media it carries now.
        self.assigned: PublisherFeed | None = None
        self.current: PublisherFeed | None = None
        self.pending: PublisherFeed | None = None
        self._transport: PacketTransport | None = None
        self._template: HeaderTemplate | None = None
        self._rtx_template: HeaderTemplate | None = None
        self.codec: SlotCodec | None = None
        self._seq_off = 0
        self._ts_off = 0
        self._pid_off = 0
        self._generation = -1
        self._resync = True
        self._sync_seq = 0
        self._last_seq = random.randrange(0, 0x8000)
        self._last_ts = random.randrange(0, 1 << 32)
        self._last_pid = random.randrange(0, 0x8000)
        self._last_at = 0.0
        self._rtx_seq = random.randrange(0, 0x8000)
        size = 1
        while size < history_size:
            size <<= 1
        self._history_mask = size - 1
        self._history: list[tuple[Any, ...]] = [_EMPTY] * size if self.video else []
        self.packets = 0
        self.octets = 0
        self.faults = 0
        self._last_fault_log = 0.0
        self.closed = False

    # --- negotiation --------------------------------------------------------------------
    def connect(self, codec: SlotCodec, transport: PacketTransport) -> None:
        """The downlink connected: from now on the slot writes to ``transport``."""
        self.codec = codec
        self.mid = codec.mid
        self._template = HeaderTemplate(
            payload_type=codec.payload_type,
            ssrc=self.ssrc,
            mid=codec.mid,
            mid_id=codec.mid_id,
            abs_send_time_id=codec.abs_send_time_id,
            audio_level_id=codec.audio_level_id if not self.video else 0,
        )
        if codec.rtx_payload_type is not None:
            self._rtx_template = HeaderTemplate(
                payload_type=codec.rtx_payload_type,
                ssrc=self.rtx_ssrc,
                mid=codec.mid,
                mid_id=codec.mid_id,
                abs_send_time_id=codec.abs_send_time_id,
            )
        self._transport = transport

    @property
    def showing_id(self) -> str | None:
        return self.current.participant_id if self.current is not None else None

    @property
    def assigned_id(self) -> str | None:
        return self.assigned.participant_id if self.assigned is not None else None

    @property
    def forwarding(self) -> bool:
        return self.current is not None and self._transport is not None

    # --- assignment -----------------------------------------------------------------------
    def assign(self, feed: PublisherFeed | None) -> None:
        """Show ``feed`` from its next keyframe on (``None``: empty the slot now)."""
        if self.closed or feed is self.assigned:
            return  # a closed slot (its downlink is gone) never attaches to a feed again
        self.assigned = feed
        if self.pending is not None and self.pending is not self.current:
            self.pending.detach(self)
        self.pending = None
        if feed is None:
            self._drop_current()
            return
        if feed is self.current:
            return  # back to what it shows: nothing to switch
        if feed.closed:
            return
        self.pending = feed
        feed.attach(self)
        if self.video:
            feed.request_keyframe("slot_switch")

    def source_gone(self, feed: PublisherFeed) -> None:
        """The publisher's feed closed (it left): stop showing it."""
        if self.pending is feed:
            self.pending = None
        if self.assigned is feed:
            self.assigned = None
        if self.current is feed:
            self.current = None
            self._resync = True
            self._on_showing_changed(self)

    def _drop_current(self) -> None:
        current = self.current
        if current is not None:
            current.detach(self)
            self.current = None
            self._resync = True
            self._on_showing_changed(self)

    # --- the forwarding path --------------------------------------------------------------
    def write(self, packet: RtpPacket, feed: PublisherFeed) -> None:
        """Forward one publisher packet, if this slot shows (or is switching to) ``feed``."""
        try:
            if feed is self.current and not self._resync and packet.generation == self._generation:
                if self.video:
                    self._forward(packet)
                    return
                # Audio from before the switch (reordered) would land on the wrong offsets:
                # only what follows the sync point passes. The point trails the stream by
                # 8,192 packets so that the 16-bit distance never wraps (a slot that kept
                # one speaker for 32,768 packets would otherwise go silent).
                ahead = seq_delta(packet.seq, self._sync_seq)
                if ahead >= 0:
                    if ahead > _SYNC_TRAIL * 2:
                        self._sync_seq = (packet.seq - _SYNC_TRAIL) & 0xFFFF
                    self._forward(packet)
                return
            self._write_slow(packet, feed)
        except Exception as exc:
            self._fault(exc)

    def _write_slow(self, packet: RtpPacket, feed: PublisherFeed) -> None:
        if self._transport is None:
            return  # not connected: switching now would start the subscriber on a delta
        if feed is self.pending:
            if self.video and not packet.keyframe:
                self._hold(packet, feed, "slot_switch")
                return
            old = self.current
            if old is not None and old is not feed:
                old.detach(self)
            self.current = feed
            self.pending = None
            self._stats.switches += 1
            self._sync(packet)
            self._forward(packet)
            self._on_showing_changed(self)
            return
        if feed is self.current:
            if self.video and not packet.keyframe:
                self._hold(packet, feed, "resync")
                return
            self._sync(packet)
            self._forward(packet)
            return
        feed.detach(self)  # a stale attachment (reassigned meanwhile)

    def _hold(self, packet: RtpPacket, feed: PublisherFeed, reason: str) -> None:
        self._stats.packets_dropped += 1
        if packet.frame_start:
            self._stats.frames_held += 1
            feed.request_keyframe(reason)

    def _sync(self, packet: RtpPacket) -> None:
        """New offsets so the slot's stream continues where it stopped."""
        codec = self.codec
        clock_rate = codec.clock_rate if codec is not None else (90000 if self.video else 48000)
        elapsed = packet.arrival - self._last_at if self._last_at else 0.0
        step = max(1, round(max(0.0, elapsed) * clock_rate)) if self.packets else 0
        self._seq_off = (self._last_seq + 1 - packet.seq) & 0xFFFF
        self._ts_off = (self._last_ts + step - packet.timestamp) & 0xFFFFFFFF
        if packet.picture_id >= 0:
            self._pid_off = (self._last_pid + 1 - packet.picture_id) & 0x7FFF
        self._generation = packet.generation
        self._sync_seq = packet.seq
        self._resync = False

    def _forward(self, packet: RtpPacket) -> None:
        transport = self._transport
        template = self._template
        if transport is None or template is None:
            return  # not connected yet: nothing to write to
        seq = (packet.seq + self._seq_off) & 0xFFFF
        ts = (packet.timestamp + self._ts_off) & 0xFFFFFFFF
        header = template.write(seq, ts, packet.marker, packet.audio_level, packet.send_time)
        pid = -1
        at = packet.picture_id_at
        data = packet.data
        if at >= 0:
            pid = (packet.picture_id + self._pid_off) & 0x7FFF
            if packet.picture_id_bits == 15:
                out = b"".join(
                    (
                        header,
                        data[packet.payload_start : at],
                        _U16.pack(0x8000 | pid),
                        data[at + 2 : packet.payload_end],
                    )
                )
            else:
                out = b"".join(
                    (
                        header,
                        data[packet.payload_start : at],
                        bytes((pid & 0x7F,)),
                        data[at + 1 : packet.payload_end],
                    )
                )
            self._last_pid = pid
        else:
            out = b"".join((header, data[packet.payload_start : packet.payload_end]))
        stats = self._stats
        if transport.send_rtp(out):
            stats.packets_forwarded += 1
            if packet.marker and self.video:
                stats.frames_forwarded += 1
        else:
            stats.packets_dropped += 1
        if self.video:
            self._history[seq & self._history_mask] = (seq, packet, ts, pid)
        self._last_seq = seq
        self._last_ts = ts
        self._last_at = packet.arrival
        self.packets += 1
        self.octets += packet.payload_end - packet.payload_start

    # --- feedback from the subscriber -------------------------------------------------------
    def retransmit(self, sequences: list[int]) -> int:
        """Answer a NACK from the history; returns how many packets were resent."""
        transport = self._transport
        if transport is None or not self.video:
            return 0
        sent = 0
        # One NACK can list a sequence many times (a hostile or buggy receiver repeating an
        # FCI): each packet is resent once, and at most _MAX_NACKED per NACK.
        for seq in list(dict.fromkeys(sequences))[:_MAX_NACKED]:
            entry = self._history[seq & self._history_mask]
            if not entry or entry[0] != seq:
                continue
            _, packet, ts, pid = entry
            payload = self._payload(packet, pid)
            if self._rtx_template is not None:
                header = self._rtx_template.write(self._rtx_seq, ts, packet.marker)
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
                out = b"".join((header, _U16.pack(seq), payload))
            else:
                assert self._template is not None
                out = b"".join((self._template.write(seq, ts, packet.marker), payload))
            if transport.send_rtp(out):
                sent += 1
        self._stats.retransmissions += sent
        return sent

    def _payload(self, packet: RtpPacket, pid: int) -> bytes:
        data = packet.data
        at = packet.picture_id_at
        if at < 0 or pid < 0:
            return data[packet.payload_start : packet.payload_end]
        if packet.picture_id_bits == 15:
            pid_bytes = _U16.pack(0x8000 | pid)
            rest = at + 2
        else:
            pid_bytes = bytes((pid & 0x7F,))
            rest = at + 1
        return b"".join(
            (data[packet.payload_start : at], pid_bytes, data[rest : packet.payload_end])
        )

    def keyframe_requested(self) -> None:
        """The subscriber sent a PLI/FIR for this slot: ask the publisher (rate-limited)."""
        feed = self.current or self.pending
        if feed is not None:
            feed.request_keyframe("subscriber_pli")

    def sender_report(self, now_mono: float, now_unix: float) -> bytes | None:
        """This slot's SR (``None`` before its first packet)."""
        if not self.packets:
            return None
        rtp_ts: int | None = None
        feed = self.current
        if feed is not None and feed.generation == self._generation:
            publisher_ts = feed.rtp_at(now_unix)
            if publisher_ts is not None:
                rtp_ts = (publisher_ts + self._ts_off) & 0xFFFFFFFF
        if rtp_ts is None:
            clock_rate = self.codec.clock_rate if self.codec is not None else 90000
            elapsed = max(0.0, now_mono - self._last_at)
            rtp_ts = (self._last_ts + round(elapsed * clock_rate)) & 0xFFFFFFFF
        return rtcp.sender_report(
            self.ssrc,
            ntp=rtcp.ntp_from_unix(now_unix),
            rtp_timestamp=rtp_ts,
            packets=self.packets,
            octets=self.octets,
        )

    # --- faults and closing ---------------------------------------------------------------
    def _fault(self, exc: Exception) -> None:
        """Re-key instead of freezing: the next keyframe restarts the slot's stream."""
        self.faults += 1
        self._stats.errors += 1
        self._resync = True
        feed = self.current or self.pending
        if feed is not None:
            feed.request_keyframe("slot_fault")
        now = time.monotonic()
        if now - self._last_fault_log > 5.0:
            self._last_fault_log = now
            log.exception(
                "slot.fault", slot=self.index, error=type(exc).__name__, **self._log_fields
            )

    def close(self) -> None:
        self.closed = True
        for feed in {self.current, self.pending}:
            if feed is not None:
                feed.detach(self)
        self.current = self.pending = self.assigned = None
        self._transport = None
        if self._history:
            self._history = [_EMPTY] * len(self._history)
