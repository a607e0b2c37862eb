"""A publisher's audio or video as the slots see it, across uplink replacements.

One :class:`PublisherFeed` per participant and kind. The uplink's inbound stream hands it
each packet, in order (video) or as it comes (audio), and the feed offers it to every slot
that shows it or is about to (:meth:`PublisherFeed.deliver`, synchronously, in the datagram
callback). A new uplink (a re-publish) or a new SSRC starts a new *generation*: every slot
re-synchronises its sequence numbers and timestamps at the new stream's first keyframe.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

from media_node.keyframes import KeyframeRequester
from media_node.rtp import RtpPacket, abs_send_time

if TYPE_CHECKING:
    from media_node.slot import Slot


class PublisherClock:
    """Maps a publisher's NTP clock to the node's, from its sender reports.

    Audio and video of one publisher share the offset, so the slots' sender reports keep
    their lip sync (the receiver aligns them by NTP time).
    """

    __slots__ = ("offset_s",)

    def __init__(self) -> None:
        #: publisher NTP time (as Unix seconds) minus node Unix time, at the last report.
        self.offset_s: float | None = None


class PublisherFeed:
    """See the module docstring."""

    def __init__(
        self,
        *,
        participant_id: str,
        kind: str,
        clock_rate: int,
        clock: PublisherClock,
        keyframes: KeyframeRequester | None = None,
    ) -> None:
        self.participant_id = participant_id
        self.kind = kind
        self.clock_rate = clock_rate
        self.clock = clock
        self.keyframes = keyframes
        self.sinks: tuple[Slot, ...] = ()
        self.generation = 0
        self.packets = 0
        self.last_packet_at = 0.0
        #: (publisher NTP time as Unix seconds, RTP timestamp) of its last SR.
        self._report: tuple[float, int] | None = None
        self.on_first_packet: Callable[[PublisherFeed], None] | None = None
        self.closed = False

    @property
    def sending(self) -> bool:
        return self.packets > 0

    def attach(self, slot: "Slot") -> None:
        if slot not in self.sinks:
            self.sinks = (*self.sinks, slot)

    def detach(self, slot: "Slot") -> None:
        if slot in self.sinks:
            self.sinks = tuple(s for s in self.sinks if s is not slot)

    def new_generation(self, *, same_stream: bool = False) -> int:
        """Slots must re-synchronise (at a keyframe): a new stream (a new uplink or SSRC),
        or the same stream after packets the node gave up on (``same_stream``)."""
        self.generation += 1
        if not same_stream:
            self._report = None
        return self.generation

    def deliver(self, packet: RtpPacket) -> None:
        """Offer one packet to every slot attached (each catches its own faults)."""
        self.last_packet_at = packet.arrival
        self.packets += 1
        if self.packets == 1 and self.on_first_packet is not None:
            self.on_first_packet(self)
        packet.generation = self.generation
        packet.send_time = abs_send_time()
        for slot in self.sinks:
            slot.write(packet, self)

    def request_keyframe(self, reason: str) -> None:
        if self.keyframes is not None and not self.closed:
            self.keyframes.request(reason)

    def sender_report(self, ntp_unix_s: float, rtp_timestamp: int, node_unix_s: float) -> None:
        """The publisher's SR for this feed's stream arrived at ``node_unix_s``."""
        self.clock.offset_s = ntp_unix_s - node_unix_s
        self._report = (ntp_unix_s, rtp_timestamp)

    def rtp_at(self, node_unix_s: float) -> int | None:
        """The publisher's RTP timestamp for node time ``node_unix_s`` (needs an SR)."""
        report = self._report
        offset = self.clock.offset_s
        if report is None or offset is None:
            return None
        ntp_s, rtp_ts = report
        return (rtp_ts + round((node_unix_s + offset - ntp_s) * self.clock_rate)) & 0xFFFFFFFF

    def close(self) -> None:
        self.closed = True
        for slot in self.sinks:
            slot.source_gone(self)
        self.sinks = ()
