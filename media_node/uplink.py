"""A session's uplink: the client offers what it sends, the node answers and receives it.

Opus and VP8 (+RTX) are pinned on receive-only transceivers *before*
``setRemoteDescription`` (aiortc filters codecs there: a browser preferring H.264 would
otherwise get H.264, which no slot could carry). aiortc's receivers are never started
(:func:`media_node.aiortc_hooks.stub_receiver`): the node reads the decrypted packets in
the datagram callback (:mod:`media_node.transport`), routes them by payload type to an
:class:`~media_node.inbound.InboundAudio` / :class:`~media_node.inbound.InboundVideo`, and
writes the RTCP itself: receiver reports with LSR/DLSR, NACKs, PLIs for the slots, and a
REMB capping the publisher's video bitrate (``MEDIA_NODE_UPLINK_VIDEO_BPS``).
"""

import random
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCSessionDescription

from media_node import aiortc_hooks, rtcp
from media_node.feed import PublisherFeed
from media_node.inbound import InboundAudio, InboundStats, InboundStream, InboundVideo
from media_node.leg import Leg, StateSink
from media_node.rtp import URI_AUDIO_LEVEL, RtpError, RtpPacket
from media_node.sdp import PINNED, UnusableSdp, check_description, negotiated_mime, pinned_codecs
from media_node.transport import PacketTransport, TransportStats
from schemas.bus import RpcFailure
from schemas.logs import get_logger

log = get_logger("media_node.uplink")

TapSink = Callable[[bytes, int], None]


class UplinkConfig:
    """What an uplink needs from its node."""

    def __init__(
        self,
        *,
        inbound: InboundStats,
        transports: TransportStats,
        max_hole_s: float,
        nack_retry_s: float,
        video_bitrate_bps: int,
        rtcp_interval_s: float,
        negotiation_timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        self.inbound = inbound
        self.transports = transports
        self.max_hole_s = max_hole_s
        self.nack_retry_s = nack_retry_s
        self.video_bitrate_bps = video_bitrate_bps
        self.rtcp_interval_s = rtcp_interval_s
        self.negotiation_timeout_s = negotiation_timeout_s
        self.connect_timeout_s = connect_timeout_s


class Uplink(Leg):
    """See the module docstring."""

    name = "uplink"

    def __init__(
        self,
        pc: Any,
        *,
        feeds: dict[str, PublisherFeed],
        config: UplinkConfig,
        on_state: StateSink,
        on_level: Callable[[float], None],
        tap: TapSink | None,
        kinds_allowed: tuple[str, ...],
        log_fields: dict[str, str],
    ) -> None:
        super().__init__(
            pc,
            on_state=on_state,
            negotiation_timeout_s=config.negotiation_timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            log_fields=log_fields,
        )
        self._feeds = feeds
        self._config = config
        self._on_level = on_level
        self._tap = tap
        self._kinds_allowed = kinds_allowed
        self.streams: dict[str, InboundStream] = {}
        self._routes: dict[int, InboundStream] = {}
        self._transports: dict[int, PacketTransport] = {}
        self._stream_transport: dict[str, PacketTransport] = {}
        self._rtcp_ssrc: dict[str, int] = {}
        self._next_rtcp = 0.0
        self.kinds: list[str] = []

    def set_tap(self, tap: TapSink | None) -> None:
        """Offer the audio to ``tap`` from now on (``None``: stop); no renegotiation."""
        self._tap = tap
        stream = self.streams.get("audio")
        if isinstance(stream, InboundAudio):
            stream.set_tap(tap)

    async def negotiate(self, offer_sdp: str) -> str:
        """Answer the client's offer (codecs pinned); the media starts once connected."""
        try:
            counts = check_description(offer_sdp)
        except UnusableSdp as exc:
            raise RpcFailure("bad_request", f"unusable SDP offer: {exc}") from None
        if counts.get("audio", 0) > 1 or counts.get("video", 0) > 1:
            raise RpcFailure("bad_request", "at most one audio and one video track")
        if not counts.get("audio") and not counts.get("video"):
            raise RpcFailure("bad_request", "the offer carries no audio or video")
        for kind in counts:
            if kind not in self._kinds_allowed:
                raise RpcFailure("bad_request", f"this session does not publish {kind}")
        pc = self.pc
        for kind in self._kinds_allowed:
            if not counts.get(kind):
                continue  # a transceiver the offer does not match breaks aiortc's answer
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(pinned_codecs(kind, sending=False))
        for transceiver in pc.getTransceivers():
            aiortc_hooks.stub_receiver(transceiver.receiver, self._receiver_of(transceiver))
        try:
            await self.step(
                pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer")),
                "setRemoteDescription",
            )
            receiving = [t for t in pc.getTransceivers() if t.receiver.track is not None]
            if not receiving:
                raise RpcFailure("bad_request", "the offer sends no audio or video")
            for transceiver in receiving:
                if negotiated_mime(transceiver) not in PINNED[transceiver.kind]:
                    raise RpcFailure(
                        "bad_request", f"{transceiver.kind}: only Opus and VP8 are forwarded"
                    )
            answer = await self.step(pc.createAnswer(), "createAnswer")
            await self.step(pc.setLocalDescription(answer), "setLocalDescription")
        except RpcFailure:
            raise
        except Exception as exc:  # aiortc raises ValueError, InternalError, ... on bad SDP
            raise RpcFailure("bad_request", f"unusable SDP offer: {type(exc).__name__}") from None
        self.kinds = [t.kind for t in receiving]
        for transceiver in receiving:
            self._transport_of(transceiver)
        self.exchanged()
        return str(pc.localDescription.sdp)

    def _receiver_of(self, transceiver: Any) -> Callable[[Any], None]:
        def receive(parameters: Any) -> None:
            self._receiving(transceiver, parameters)

        return receive

    def _transport_of(self, transceiver: Any) -> PacketTransport:
        dtls = transceiver.receiver.transport
        transport = self._transports.get(id(dtls))
        if transport is None:
            transport = PacketTransport(
                dtls,
                on_rtp=self._on_rtp,
                on_rtcp=self._on_rtcp,
                stats=self._config.transports,
                log_fields=self._log_fields,
            )
            self._transports[id(dtls)] = transport
        self._stream_transport[transceiver.kind] = transport
        self._rtcp_ssrc[transceiver.kind] = aiortc_hooks.sender_ssrcs(transceiver.sender)[0]
        return transport

    def _receiving(self, transceiver: Any, parameters: Any) -> None:
        """aiortc would start its receiver now (DTLS connected): the node takes over."""
        if self.closed or transceiver.receiver.track is None:
            return
        kind = transceiver.kind
        feed = self._feeds.get(kind)
        if feed is None:
            return
        transport = self._transport_of(transceiver)
        transport.hook_protocols()
        codecs = list(parameters.codecs)
        media = next((c for c in codecs if not c.mimeType.lower().endswith("/rtx")), None)
        if media is None:
            return
        rtx = next(
            (
                c.payloadType
                for c in codecs
                if c.mimeType.lower().endswith("/rtx")
                and c.parameters.get("apt") == media.payloadType
            ),
            None,
        )
        stats = self._config.inbound
        stream: InboundStream
        if kind == "audio":
            ids = {ext.uri: ext.id for ext in parameters.headerExtensions}
            stream = InboundAudio(
                feed,
                payload_type=media.payloadType,
                clock_rate=media.clockRate,
                stats=stats,
                audio_level_id=ids.get(URI_AUDIO_LEVEL, 0),
                on_level=self._on_level,
                tap=self._tap,
                log_fields=self._log_fields,
            )
        else:
            stream = InboundVideo(
                feed,
                payload_type=media.payloadType,
                rtx_payload_type=rtx,
                clock_rate=media.clockRate,
                stats=stats,
                send_nack=self._send_nack,
                max_hole_s=self._config.max_hole_s,
                nack_retry_s=self._config.nack_retry_s,
                log_fields=self._log_fields,
            )
            if rtx is not None:
                self._routes[rtx] = stream
        # A re-publish is a new stream for every slot showing this publisher.
        feed.new_generation()
        self.streams[kind] = stream
        self._routes[media.payloadType] = stream

    # --- packets in -----------------------------------------------------------------------
    def _on_rtp(self, data: bytes, arrival: float) -> None:
        try:
            packet = RtpPacket(data, arrival)
        except RtpError:
            return
        stream = self._routes.get(packet.payload_type)
        if stream is None:
            return
        try:
            stream.receive(packet)
        except Exception as exc:
            self._config.inbound.errors += 1
            log.exception("uplink.stream_fault", kind=stream.kind, error=type(exc).__name__)
            stream.restart()  # the slots re-key on the next keyframe
            stream.feed.request_keyframe("inbound_fault")

    def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = rtcp.parse(data)
        except ValueError:
            return
        for packet in packets:
            if rtcp.is_sender_report(packet):
                ssrc, ntp, rtp_ts = rtcp.sender_report_info(packet)
                for stream in self.streams.values():
                    stream.sender_report(ssrc, ntp, rtp_ts)

    # --- RTCP out -------------------------------------------------------------------------
    def send_pli(self, media_ssrc: int) -> None:
        transport = self._stream_transport.get("video")
        if transport is not None and not self.closed:
            transport.send_rtcp(rtcp.pli(self._rtcp_ssrc.get("video", 0), media_ssrc))

    def _send_nack(self, media_ssrc: int, seqs: list[int]) -> None:
        transport = self._stream_transport.get("video")
        if transport is not None and not self.closed:
            transport.send_rtcp(rtcp.nack(self._rtcp_ssrc.get("video", 0), media_ssrc, seqs))

    def tick(self, now: float) -> None:
        """NACK retries and hole deadlines; receiver reports and REMB every interval."""
        if self.closed:
            return
        for stream in self.streams.values():
            stream.tick(now)
        if now < self._next_rtcp:
            return
        interval = self._config.rtcp_interval_s
        self._next_rtcp = now + interval * (0.5 + random.random())
        for kind, stream in self.streams.items():
            transport = self._stream_transport.get(kind)
            block = stream.report_block(now)
            if transport is None or block is None:
                continue
            sender = self._rtcp_ssrc.get(kind, 0)
            report = rtcp.receiver_report(sender, [block])
            if kind == "video" and stream.primary_ssrc is not None:
                report += rtcp.remb(sender, self._config.video_bitrate_bps, [stream.primary_ssrc])
            transport.send_rtcp(report)

    @property
    def receiving(self) -> bool:
        """Whether any packet arrived in the last two seconds."""
        now = time.monotonic()
        return any(now - s.feed.last_packet_at < 2.0 for s in self.streams.values())

    def release(self) -> None:
        for transport in self._transports.values():
            transport.close()
        for stream in self.streams.values():
            stream.close()
        self._routes.clear()
