"""What the node does with each packet a publisher sends, before any slot sees it.

:class:`InboundVideo` keeps the publisher's video **in order and whole** for the slots:

- RTX retransmissions are unwrapped (padding-only probes dropped), the primary SSRC is
  learned from the first media packet (a new SSRC is a new stream: every slot re-syncs at
  its first keyframe);
- a gap makes the node NACK the missing packets toward the publisher at once, and again
  every ``nack_retry_s`` (aiortc NACKs only once); packets after the gap wait (bounded) and
  are released in order as soon as it is filled, so a subscriber never sees a hole the
  node could still repair, and no packet waits when nothing is missing;
- a hole older than ``max_hole_s`` (a packet and its retransmissions lost) is skipped: the
  packets after it are released with a *discontinuity* mark, every slot drops delta frames
  until the next keyframe, and the node asks for one (a short freeze, never a broken
  picture);
- receiver-report statistics (RFC 3550 A.3/A.8) are kept for the node's RRs upstream.

:class:`InboundAudio` passes Opus packets on as they come (no NACK for audio), reads the
audio level extension (active speaker, audio slots) and offers each packet to the
transcription tap, whose failures never reach forwarding.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from media_node import rtcp
from media_node.feed import PublisherFeed
from media_node.rtp import RtpPacket, parse_vp8, seq_delta
from schemas.logs import get_logger

log = get_logger("media_node.inbound")

NackSink = Callable[[int, list[int]], None]
LevelSink = Callable[[float], None]


@dataclass(slots=True)
class InboundStats:
    """Counters shared by every inbound stream of a node (read by the heartbeat)."""

    packets: int = 0
    retransmissions: int = 0
    probes_dropped: int = 0
    late_dropped: int = 0
    nacks_sent: int = 0
    holes_skipped: int = 0
    tap_errors: int = 0
    errors: int = 0


class ReceptionStats:
    """RFC 3550 reception statistics of one SSRC, for receiver reports."""

    __slots__ = (
        "_clock_rate",
        "_expected_prior",
        "_jitter_q4",
        "_last_transit",
        "_received_prior",
        "base_seq",
        "cycles",
        "max_seq",
        "received",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self._clock_rate = clock_rate
        self.base_seq = -1
        self.max_seq = -1
        self.cycles = 0
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter_q4 = 0
        self._last_transit: int | None = None

    def add(self, seq: int, timestamp: int, arrival: float) -> None:
        self.received += 1
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
        else:
            delta = seq_delta(seq, self.max_seq)
            if delta > 0:
                if seq < self.max_seq:
                    self.cycles += 1 << 16
                self.max_seq = seq
        transit = int(arrival * self._clock_rate) - timestamp
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            if d < self._clock_rate:  # a timestamp jump (DTX, a new source) is not jitter
                self._jitter_q4 += d - ((self._jitter_q4 + 8) >> 4)
        self._last_transit = transit

    @property
    def expected(self) -> int:
        return self.cycles + self.max_seq - self.base_seq + 1 if self.base_seq >= 0 else 0

    def report_block(self, lsr: int, dlsr: int) -> Any:
        expected = self.expected
        interval_expected = expected - self._expected_prior
        interval_received = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = interval_expected - interval_received
        fraction = 0
        if interval_expected > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // interval_expected)
        return rtcp.report_block(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=expected - self.received,
            highest_sequence=self.cycles + max(self.max_seq, 0),
            jitter=self._jitter_q4 >> 4,
            lsr=lsr,
            dlsr=dlsr,
        )


class InboundStream:
    """What both kinds share: SSRC learning, statistics, sender reports."""

    kind = ""

    def __init__(
        self,
        feed: PublisherFeed,
        *,
        payload_type: int,
        clock_rate: int,
        stats: InboundStats,
        log_fields: dict[str, str] | None = None,
    ) -> None:
        self.feed = feed
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self._stats = stats
        self._log_fields = log_fields or {}
        self.primary_ssrc: int | None = None
        self.reception: ReceptionStats | None = None
        #: (LSR, node monotonic time of arrival) of the publisher's last sender report.
        self.last_sr: tuple[int, float] | None = None
        self._started = False

    def _learn_ssrc(self, ssrc: int) -> None:
        if self.primary_ssrc is not None:
            log.info("inbound.ssrc_changed", kind=self.kind, **self._log_fields)
            self.restart()
        elif self._started:
            self.feed.new_generation()
        self._started = True
        self.primary_ssrc = ssrc
        self.reception = ReceptionStats(ssrc, self.clock_rate)
        if self.feed.keyframes is not None:
            self.feed.keyframes.set_primary_ssrc(ssrc)

    def restart(self) -> None:
        """Start over as a new stream (new SSRC or a fault): slots re-sync on it."""
        self.feed.new_generation()
        self.primary_ssrc = None
        self.reception = None
        self.last_sr = None

    def sender_report(self, ssrc: int, ntp: int, rtp_timestamp: int) -> None:
        if ssrc != self.primary_ssrc:
            return
        self.last_sr = (rtcp.middle_32(ntp), time.monotonic())
        self.feed.sender_report(rtcp.unix_from_ntp(ntp), rtp_timestamp, time.time())

    def report_block(self, now: float) -> Any | None:
        if self.reception is None or not self.reception.received:
            return None
        lsr = dlsr = 0
        if self.last_sr is not None:
            lsr = self.last_sr[0]
            dlsr = int((now - self.last_sr[1]) * 65536) & 0xFFFFFFFF
        return self.reception.report_block(lsr, dlsr)

    def receive(self, packet: RtpPacket) -> None:
        raise NotImplementedError

    def tick(self, now: float) -> None:
        """Periodic work (NACK retries, hole deadlines)."""

    def close(self) -> None:
        """Forget buffered packets."""


class InboundAudio(InboundStream):
    """See the module docstring."""

    kind = "audio"

    def __init__(
        self,
        feed: PublisherFeed,
        *,
        payload_type: int,
        clock_rate: int,
        stats: InboundStats,
        audio_level_id: int,
        on_level: LevelSink,
        tap: Callable[[bytes, int], None] | None = None,
        log_fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            feed,
            payload_type=payload_type,
            clock_rate=clock_rate,
            stats=stats,
            log_fields=log_fields,
        )
        self._audio_level_id = audio_level_id
        self._on_level = on_level
        self._tap = tap
        self._last_tap_error = 0.0

    def set_tap(self, tap: Callable[[bytes, int], None] | None) -> None:
        """Start (or stop) offering this stream's payloads to a transcription tap."""
        self._tap = tap

    def receive(self, packet: RtpPacket) -> None:
        if packet.ssrc != self.primary_ssrc:
            self._learn_ssrc(packet.ssrc)
        self._stats.packets += 1
        assert self.reception is not None
        self.reception.add(packet.seq, packet.timestamp, packet.arrival)
        level = packet.read_audio_level(self._audio_level_id)
        packet.audio_level = level
        if level >= 0:
            self._on_level(-float(level))
        elif self._audio_level_id <= 0:
            # No level extension negotiated: Opus DTX and comfort-noise frames are a few
            # bytes, speech tens; good enough to rank speakers.
            self._on_level(-30.0 if packet.payload_size > 20 else -127.0)
        self.feed.deliver(packet)
        if self._tap is not None:
            try:
                self._tap(packet.data[packet.payload_start : packet.payload_end], packet.timestamp)
            except Exception as exc:  # transcription must never stop forwarding
                self._stats.tap_errors += 1
                now = time.monotonic()
                if now - self._last_tap_error > 5.0:
                    self._last_tap_error = now
                    log.exception(
                        "inbound.tap_failed", error=type(exc).__name__, **self._log_fields
                    )


class InboundVideo(InboundStream):
    """See the module docstring."""

    kind = "video"

    def __init__(
        self,
        feed: PublisherFeed,
        *,
        payload_type: int,
        rtx_payload_type: int | None,
        clock_rate: int,
        stats: InboundStats,
        send_nack: NackSink,
        max_hole_s: float = 0.5,
        nack_retry_s: float = 0.1,
        max_nack_tries: int = 3,
        max_held: int = 512,
        log_fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            feed,
            payload_type=payload_type,
            clock_rate=clock_rate,
            stats=stats,
            log_fields=log_fields,
        )
        self.rtx_payload_type = rtx_payload_type
        self._send_nack = send_nack
        self.max_hole_s = max_hole_s
        self.nack_retry_s = nack_retry_s
        self.max_nack_tries = max_nack_tries
        self.max_held = max_held
        self._next_seq: int | None = None
        self._highest: int | None = None
        self._held: dict[int, RtpPacket] = {}
        self._hole_since = 0.0
        #: seq -> [first missed, last NACKed, tries]
        self._missing: dict[int, list[float]] = {}

    def receive(self, packet: RtpPacket) -> None:
        if packet.payload_type == self.rtx_payload_type:
            if self.primary_ssrc is None:
                return
            if not packet.unwrap_rtx(self.payload_type, self.primary_ssrc):
                self._stats.probes_dropped += 1
                return
            self._stats.retransmissions += 1
        else:
            if packet.ssrc != self.primary_ssrc:
                self._learn_ssrc(packet.ssrc)
                self._reset_order()
            assert self.reception is not None
            self.reception.add(packet.seq, packet.timestamp, packet.arrival)
        self._stats.packets += 1
        parse_vp8(packet)
        self._order(packet)

    # --- in order, whole ------------------------------------------------------------------
    def _reset_order(self) -> None:
        self._next_seq = None
        self._highest = None
        self._held.clear()
        self._missing.clear()

    def _order(self, packet: RtpPacket) -> None:
        seq = packet.seq
        expected = self._next_seq
        if expected is None or seq == expected:
            if expected is None:
                self._highest = seq
            self._next_seq = (seq + 1) & 0xFFFF
            if self._missing:
                self._missing.pop(seq, None)
            if seq_delta(seq, self._highest or seq) > 0:
                self._highest = seq
            self.feed.deliver(packet)
            if self._held:
                self._drain(packet.arrival)
            return
        delta = seq_delta(seq, expected)
        if delta < 0:
            self._missing.pop(seq, None)
            self._stats.late_dropped += 1  # a duplicate, or a packet given up on
            return
        if delta > self.max_held:
            self._skip(packet.arrival, reason="too_far")
            self._reset_order()
            packet.discontinuity = True
            self._order(packet)
            return
        if seq in self._held:
            return
        if not self._held:
            self._hole_since = packet.arrival
        self._held[seq] = packet
        self._missing.pop(seq, None)
        highest = self._highest if self._highest is not None else expected
        if seq_delta(seq, highest) > 0:
            gap = [(highest + i) & 0xFFFF for i in range(1, seq_delta(seq, highest))]
            gap = [s for s in gap if s not in self._held]
            self._highest = seq
            if gap:
                now = packet.arrival
                for s in gap:
                    self._missing[s] = [now, now, 1.0]
                self._nack(gap)
        if packet.arrival - self._hole_since >= self.max_hole_s:
            self._skip(packet.arrival, reason="hole_timeout")

    def _drain(self, now: float) -> None:
        held = self._held
        expected = self._next_seq
        while expected in held:
            packet = held.pop(expected)
            expected = (expected + 1) & 0xFFFF
            self._next_seq = expected
            self.feed.deliver(packet)
        if held:
            self._hole_since = now  # the next hole starts waiting now

    def _skip(self, now: float, *, reason: str) -> None:
        """Give up on the oldest hole: release what follows it, marked as a discontinuity."""
        if not self._held or self._next_seq is None:
            return
        expected = self._next_seq
        first = min(self._held, key=lambda s: seq_delta(s, expected))
        for s in list(self._missing):
            if seq_delta(s, first) < 0:
                del self._missing[s]
        self._held[first].discontinuity = True
        self._next_seq = first
        self._stats.holes_skipped += 1
        log.info(
            "inbound.hole_skipped",
            reason=reason,
            packets=seq_delta(first, expected),
            **self._log_fields,
        )
        # Slots synced to this stream must not continue across the skipped packets: as a
        # new generation, they drop delta frames until the keyframe asked for here.
        self.feed.new_generation(same_stream=True)
        self.feed.request_keyframe("upstream_loss")
        self._drain(now)

    def _nack(self, seqs: list[int]) -> None:
        if self.primary_ssrc is None or not seqs:
            return
        self._stats.nacks_sent += 1
        self._send_nack(self.primary_ssrc, seqs)

    def tick(self, now: float) -> None:
        if self._held and now - self._hole_since >= self.max_hole_s:
            self._skip(now, reason="hole_timeout")
        if not self._missing:
            return
        again: list[int] = []
        for seq, entry in list(self._missing.items()):
            first, last, tries = entry
            if now - first > self.max_hole_s:
                del self._missing[seq]
            elif now - last >= self.nack_retry_s and tries < self.max_nack_tries:
                entry[1] = now
                entry[2] = tries + 1
                again.append(seq)
        self._nack(again)

    def close(self) -> None:
        self._reset_order()
