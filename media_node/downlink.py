"""A session's downlink: the node offers a fixed set of send-only slots, the client answers.

One peer connection (BUNDLE: one ICE/DTLS association) carries every slot, negotiated
once. aiortc's senders are never started (:func:`media_node.aiortc_hooks.stub_sender`):
they only put each slot's mid, SSRC and RTX SSRC in the SDP. The slots write RTP
themselves (:mod:`media_node.slot`); this leg answers the subscriber's RTCP (NACK from the
slot histories, PLI/FIR to the slot's publisher) and sends one compound RTCP per interval
with every active slot's sender report and SDES.
"""

import random
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCSessionDescription

from media_node import aiortc_hooks, rtcp
from media_node.leg import Leg, StateSink
from media_node.sdp import UnusableSdp, check_description, pinned_codecs
from media_node.slot import ForwardingStats, Slot, SlotCodec
from media_node.transport import PacketTransport, TransportStats
from schemas.bus import RpcFailure
from schemas.logs import get_logger

log = get_logger("media_node.downlink")


class DownlinkConfig:
    """What a downlink needs from its node."""

    def __init__(
        self,
        *,
        forwarding: ForwardingStats,
        transports: TransportStats,
        rtcp_interval_s: float,
        negotiation_timeout_s: float,
        connect_timeout_s: float,
        history_packets: int,
    ) -> None:
        self.forwarding = forwarding
        self.transports = transports
        self.rtcp_interval_s = rtcp_interval_s
        self.negotiation_timeout_s = negotiation_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.history_packets = history_packets


class Downlink(Leg):
    """See the module docstring."""

    name = "downlink"

    def __init__(
        self,
        pc: Any,
        *,
        video_slots: int,
        audio_slots: int,
        config: DownlinkConfig,
        on_state: StateSink,
        on_showing_changed: Callable[[Slot], None],
        log_fields: dict[str, str],
    ) -> None:
        super().__init__(
            pc,
            on_state=on_state,
            negotiation_timeout_s=config.negotiation_timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            log_fields=log_fields,
        )
        self._config = config
        self.slots: list[Slot] = []
        self._by_ssrc: dict[int, Slot] = {}
        self._transport: PacketTransport | None = None
        self._next_rtcp = 0.0
        self._cname = f"meeshy-{random.getrandbits(48):012x}"
        kinds = ["video"] * video_slots + ["audio"] * audio_slots
        for index, kind in enumerate(kinds):
            transceiver = pc.addTransceiver(kind, direction="sendonly")
            transceiver.setCodecPreferences(pinned_codecs(kind, sending=True))
            ssrc, rtx_ssrc = aiortc_hooks.sender_ssrcs(transceiver.sender)
            slot = Slot(
                index=index,
                kind=kind,
                ssrc=ssrc,
                rtx_ssrc=rtx_ssrc,
                stats=config.forwarding,
                on_showing_changed=on_showing_changed,
                history_size=config.history_packets,
                log_fields=log_fields,
            )
            aiortc_hooks.stub_sender(transceiver.sender, self._sender_of(slot))
            self.slots.append(slot)
            self._by_ssrc[ssrc] = slot
        self._transceivers = pc.getTransceivers()
        self.answered = False
        #: The subscriber's last bandwidth estimate of this downlink (REMB, computed from
        #: the slots' abs-send-time) and when it came (monotonic); 0 before the first.
        self.estimate_bps = 0
        self.estimate_at = 0.0

    def _sender_of(self, slot: Slot) -> Callable[[Any], None]:
        def send(parameters: Any) -> None:
            self._sending(slot, parameters)

        return send

    async def offer(self) -> str:
        """The node's offer (ICE gathered): every slot's m-line, mid and SSRC."""
        pc = self.pc
        try:
            offer = await self.step(pc.createOffer(), "createOffer")
            await self.step(pc.setLocalDescription(offer), "setLocalDescription")
        except RpcFailure:
            raise
        except Exception as exc:
            log.exception("downlink.offer_failed", error=type(exc).__name__, **self._log_fields)
            raise RpcFailure("internal", "could not create the downlink offer") from None
        for slot, transceiver in zip(self.slots, self._transceivers, strict=True):
            slot.mid = str(transceiver.mid)
        dtls = self._transceivers[0].sender.transport if self._transceivers else None
        if dtls is not None:
            self._transport = PacketTransport(
                dtls,
                on_rtp=self._on_rtp,
                on_rtcp=self._on_rtcp,
                stats=self._config.transports,
                log_fields=self._log_fields,
            )
        return str(pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        """Apply the client's answer; the slots start writing once DTLS is connected."""
        if self.answered:
            raise RpcFailure("conflict", "this downlink was already answered")
        try:
            counts = check_description(sdp)
        except UnusableSdp as exc:
            raise RpcFailure("bad_request", f"unusable SDP answer: {exc}") from None
        expected = {k: sum(s.kind == k for s in self.slots) for k in ("audio", "video")}
        if any(counts.get(k, 0) != n for k, n in expected.items()):
            raise RpcFailure("bad_request", "the answer does not match the offer's m-lines")
        self.answered = True  # before the await: a concurrent answer gets ``conflict``
        try:
            await self.step(
                self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer")),
                "setRemoteDescription",
            )
        except RpcFailure:
            self.answered = False
            raise
        except Exception as exc:
            self.answered = False
            raise RpcFailure("bad_request", f"unusable SDP answer: {type(exc).__name__}") from None
        self.exchanged()

    def _sending(self, slot: Slot, parameters: Any) -> None:
        """aiortc would start this slot's sender now (DTLS connected): the node writes."""
        if self.closed:
            return
        transport = self._transport
        if transport is None:
            dtls = self._transceivers[slot.index].sender.transport
            transport = self._transport = PacketTransport(
                dtls,
                on_rtp=self._on_rtp,
                on_rtcp=self._on_rtcp,
                stats=self._config.transports,
                log_fields=self._log_fields,
            )
        transport.hook_protocols()
        try:
            codec = SlotCodec.from_parameters(parameters)
        except ValueError:
            log.warning("downlink.slot_unusable", slot=slot.index, **self._log_fields)
            return
        slot.connect(codec, transport)
        log.debug("downlink.slot_connected", slot=slot.index, kind=slot.kind, **self._log_fields)
        # A video slot joining mid-stream starts at the publisher's next keyframe.
        if slot.video:
            slot.keyframe_requested()

    # --- the subscriber's RTCP ------------------------------------------------------------
    def _on_rtp(self, data: bytes, arrival: float) -> None:
        """A subscriber sends no RTP on a downlink."""

    def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = rtcp.parse(data)
        except ValueError:
            return
        for packet in packets:
            if rtcp.is_nack(packet):
                slot = self._by_ssrc.get(int(packet.media_ssrc))
                if slot is not None:
                    slot.retransmit(rtcp.nack_sequences(packet))
            elif rtcp.is_keyframe_request(packet):
                slot = self._by_ssrc.get(rtcp.keyframe_request_ssrc(packet))
                if slot is not None:
                    slot.keyframe_requested()
            else:
                bitrate = rtcp.remb_bitrate(packet)
                if bitrate is not None:
                    self.estimate_bps = bitrate
                    self.estimate_at = time.monotonic()

    def tick(self, now: float) -> None:
        """Sender reports (with SDES) for every slot that sent something, each interval."""
        if self.closed or now < self._next_rtcp or self._transport is None:
            return
        self._next_rtcp = now + self._config.rtcp_interval_s * (0.5 + random.random())
        unix = time.time()
        reports = [r for r in (s.sender_report(now, unix) for s in self.slots) if r]
        if not reports:
            return
        active = [s.ssrc for s in self.slots if s.packets]
        compound = b"".join(reports) + rtcp.sdes(active, self._cname)
        self._transport.send_rtcp(compound)

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def release(self) -> None:
        for slot in self.slots:
            slot.close()
        if self._transport is not None:
            self._transport.close()
