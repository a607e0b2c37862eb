"""One participant in one call on this node: its uplink, its downlink of slots, its feeds.

A ``call`` session publishes on its uplink (what others may receive, as two
:class:`~media_node.feed.PublisherFeed` s that outlive uplink replacements) and receives on
its downlink (a fixed set of :class:`~media_node.slot.Slot` s the call room fills). A
``captions`` session has an audio-only uplink feeding the transcription tap and nothing
else. Re-publishing or re-opening the downlink replaces that leg's peer connection.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection

from media_node.downlink import Downlink, DownlinkConfig
from media_node.feed import PublisherClock, PublisherFeed
from media_node.keyframes import KeyframeRequester
from media_node.leg import Leg
from media_node.sdp import announce_address
from media_node.slot import Slot
from media_node.tap import AudioTap, ChunkSink, TapStats, UtteranceCutter, VadKind
from media_node.uplink import Uplink, UplinkConfig
from schemas import media
from schemas.bus import RpcFailure
from schemas.logs import get_logger
from schemas.media_events import LegStateChanged, MediaEvent, SessionClosed

log = get_logger("media_node.session")


@dataclass
class NodeContext:
    """What every session of a node shares."""

    node_id: str
    uplinks: UplinkConfig
    downlinks: DownlinkConfig
    taps: TapStats
    executor: Executor
    publish_chunk: ChunkSink
    emit: Callable[[MediaEvent], None]
    vad: VadKind = "silero"
    keyframe_interval_s: float = 0.1
    tap_queue_packets: int = 250
    new_cutter: Callable[[], UtteranceCutter] = UtteranceCutter
    public_ip: str = ""
    #: STUN/TURN servers for the node's own candidates; none by default (aiortc would
    #: otherwise ask a public Google STUN server for every connection).
    stun_urls: tuple[str, ...] = ()
    legs: set[Leg] = field(default_factory=set)

    def peer_connection(self) -> RTCPeerConnection:
        servers = [RTCIceServer(urls=url) for url in self.stun_urls]
        config = RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        return RTCPeerConnection(config)


class RoomHooks(Protocol):
    """What a session tells its call room."""

    def level(self, participant_id: str, dbov: float) -> None: ...

    def publishing_changed(self, session: "ParticipantSession") -> None: ...

    def downlink_changed(self, session: "ParticipantSession") -> None: ...

    def showing_changed(self, session: "ParticipantSession", slot: Slot) -> None: ...


class ParticipantSession:
    """See the module docstring."""

    def __init__(
        self,
        *,
        session_id: str,
        call_id: str,
        participant_id: str,
        purpose: media.SessionPurpose,
        transcription: bool,
        language: str,
        lease_s: float,
        video_slots: int,
        audio_slots: int,
        joined: int,
        node: NodeContext,
        room: RoomHooks,
    ) -> None:
        self.session_id = session_id
        self.call_id = call_id
        self.participant_id = participant_id
        self.purpose = purpose
        self.transcription = transcription
        self.language = language
        self.lease_s = lease_s
        self.video_slots = video_slots if purpose == "call" else 0
        self.audio_slots = audio_slots if purpose == "call" else 0
        self.joined = joined
        self._node = node
        self._room = room
        self.fields = {"call_id": call_id, "participant_id": participant_id}
        clock = PublisherClock()
        self.keyframes = KeyframeRequester(
            self._send_pli, min_interval_s=node.keyframe_interval_s, log_fields=self.fields
        )
        self.feeds: dict[str, PublisherFeed] = {
            "audio": PublisherFeed(
                participant_id=participant_id, kind="audio", clock_rate=48000, clock=clock
            )
        }
        if purpose == "call":
            self.feeds["video"] = PublisherFeed(
                participant_id=participant_id,
                kind="video",
                clock_rate=90000,
                clock=clock,
                keyframes=self.keyframes,
            )
        self.uplink: Uplink | None = None
        self.downlink: Downlink | None = None
        self._offered: Downlink | None = None
        self.tap: AudioTap | None = None
        self.pinned: list[str] = []
        self.video_tiles: int | None = None
        self.mapping_version = 0
        self.level_from_rtp = False
        self.closed = False
        self.close_reason: media.CloseReason | None = None

    # --- what others may receive --------------------------------------------------------
    @property
    def publishes_video(self) -> bool:
        return self.purpose == "call" and self.uplink is not None and "video" in self.uplink.kinds

    @property
    def publishes_audio(self) -> bool:
        return self.purpose == "call" and self.uplink is not None and "audio" in self.uplink.kinds

    @property
    def idle(self) -> bool:
        """Connected but sending nothing (a pre-warmed session)."""
        up = self.uplink
        return up is not None and up.state == "connected" and not up.receiving

    # --- the uplink -----------------------------------------------------------------------
    async def publish(self, offer_sdp: str) -> media.SdpAnswer:
        """Answer the client's offer; a second publish replaces the uplink."""
        self._check_open()
        node = self._node
        kinds = ("audio", "video") if self.purpose == "call" else ("audio",)
        uplink = Uplink(
            node.peer_connection(),
            feeds=self.feeds,
            config=node.uplinks,
            on_state=self._leg_state,
            on_level=self._level_from_rtp,
            tap=self._tap_sink() if self.transcription else None,
            kinds_allowed=kinds,
            log_fields=self.fields,
        )
        node.legs.add(uplink)
        uplink.on_closed = node.legs.discard
        try:
            answer = await uplink.negotiate(offer_sdp)
        except BaseException:
            await self._discard(uplink)
            raise
        if self.closed:
            await self._discard(uplink)
            raise RpcFailure("not_found", "this session was closed")
        old, self.uplink = self.uplink, uplink
        if old is not None:
            log.info("session.uplink_replaced", **self.fields)
            self._close_leg(old)
        if self.transcription and self.tap is None and "audio" in uplink.kinds:
            self._start_tap()
        log.info("session.published", kinds=uplink.kinds, **self.fields)
        self._room.publishing_changed(self)
        return media.SdpAnswer(
            session_id=self.session_id,
            sdp=announce_address(answer, node.public_ip),
            audio="audio" in uplink.kinds,
            video="video" in uplink.kinds,
        )

    def _send_pli(self, ssrc: int) -> None:
        if self.uplink is not None:
            self.uplink.send_pli(ssrc)

    def _level_from_rtp(self, dbov: float) -> None:
        if self.closed or self.purpose != "call":
            return
        self.level_from_rtp = True
        self._room.level(self.participant_id, dbov)

    def _level_from_tap(self, dbov: float) -> None:
        if not self.level_from_rtp and not self.closed and self.purpose == "call":
            self._room.level(self.participant_id, dbov)

    def _tap_sink(self) -> Callable[[bytes, int], None]:
        def feed(payload: bytes, timestamp: int) -> None:
            if self.tap is not None:
                self.tap.feed(payload, timestamp)

        return feed

    async def set_transcription(self, enabled: bool, language: str) -> None:
        """Tap this session's microphone from now on, or stop; the media is untouched.

        A new language applies to the next chunk of the tap. Turning it off closes the
        utterance in progress (its final chunk goes out) and stops the tap.
        """
        self._check_open()
        self.language = language
        if self.tap is not None:
            self.tap.language = language
        if enabled == self.transcription:
            return
        self.transcription = enabled
        uplink = self.uplink
        if enabled:
            if uplink is not None:
                uplink.set_tap(self._tap_sink())
                if self.tap is None and "audio" in uplink.kinds:
                    self._start_tap()
        else:
            if uplink is not None:
                uplink.set_tap(None)
            tap, self.tap = self.tap, None
            if tap is not None:
                await tap.stop()
        log.info("session.transcription", enabled=enabled, language=language, **self.fields)

    def _start_tap(self) -> None:
        node = self._node
        self.tap = AudioTap(
            call_id=self.call_id,
            participant_id=self.participant_id,
            language=self.language,
            vad=node.vad,
            executor=node.executor,
            publish=node.publish_chunk,
            stats=node.taps,
            on_level=self._level_from_tap,
            queue_size=node.tap_queue_packets,
            new_cutter=node.new_cutter,
        )
        self.tap.start()

    # --- the downlink ---------------------------------------------------------------------
    async def open_downlink(self) -> media.DownlinkOffer:
        """The node's offer of this session's slots; a second one replaces the downlink."""
        self._check_open()
        if self.purpose != "call":
            raise RpcFailure("bad_request", "a captions session has no downlink")
        if self.video_slots + self.audio_slots == 0:
            raise RpcFailure("bad_request", "this session asked for no slots")
        node = self._node
        downlink = Downlink(
            node.peer_connection(),
            video_slots=self.video_slots,
            audio_slots=self.audio_slots,
            config=node.downlinks,
            on_state=self._leg_state,
            on_showing_changed=lambda slot: self._room.showing_changed(self, slot),
            log_fields=self.fields,
        )
        node.legs.add(downlink)
        downlink.on_closed = node.legs.discard
        try:
            sdp = await downlink.offer()
        except BaseException:
            await self._discard(downlink)
            raise
        if self.closed:
            await self._discard(downlink)
            raise RpcFailure("not_found", "this session was closed")
        previous, self._offered = self._offered, downlink
        if previous is not None and previous is not self.downlink:
            self._close_leg(previous)  # offered but never answered
        return media.DownlinkOffer(
            session_id=self.session_id,
            sdp=announce_address(sdp, node.public_ip),
            slots=[self.slot_info(s) for s in downlink.slots],
            version=self.mapping_version,
        )

    async def answer_downlink(self, sdp: str) -> None:
        """Apply the answer to the last offer; it replaces the previous downlink."""
        self._check_open()
        offered = self._offered
        if offered is None:
            if self.downlink is not None and self.downlink.answered:
                raise RpcFailure("conflict", "this downlink was already answered")
            raise RpcFailure("conflict", "ask for a downlink offer first (open_downlink)")
        await offered.answer(sdp)
        if self.closed or offered.closed:
            raise RpcFailure("not_found", "this session was closed")
        if self._offered is offered:
            self._offered = None
        old, self.downlink = self.downlink, offered
        if old is not None and old is not offered:
            log.info("session.downlink_replaced", **self.fields)
            self._close_leg(old)
        self._room.downlink_changed(self)

    def slot_info(self, slot: Slot) -> media.Slot:
        return media.Slot(
            index=slot.index,
            mid=slot.mid,
            kind="video" if slot.video else "audio",
            ssrc=slot.ssrc,
            publisher_id=slot.assigned_id,
            showing_id=slot.showing_id,
        )

    @property
    def slots(self) -> list[Slot]:
        return self.downlink.slots if self.downlink is not None else []

    # --- state ------------------------------------------------------------------------------
    def _leg_state(self, leg: Leg, state: str, reason: str) -> None:
        current = leg is self.uplink or leg is self.downlink or leg is self._offered
        if self.closed or not current:
            return
        self._emit(
            LegStateChanged(
                call_id=self.call_id,
                session_id=self.session_id,
                participant_id=self.participant_id,
                node_id=self._node.node_id,
                leg="uplink" if leg is self.uplink else "downlink",
                state=state,  # type: ignore[arg-type]
                reason=reason,
            )
        )
        if leg is self.downlink and state == "connected":
            self._room.downlink_changed(self)
        if state == "failed":
            # A dead leg gives up its place: others' slots stop showing a frozen uplink, and
            # a dead downlink's slots stop counting as receivers (the client repairs by
            # publishing or opening a downlink again).
            if leg is self.uplink:
                self.uplink = None
                self._room.publishing_changed(self)
            elif leg is self.downlink:
                self.downlink = None
                for slot in leg.slots if isinstance(leg, Downlink) else []:
                    slot.close()
                self._room.downlink_changed(self)

    def _emit(self, event: MediaEvent) -> None:
        self._node.emit(event)

    def _check_open(self) -> None:
        if self.closed:
            raise RpcFailure("not_found", "this session was closed")

    def _close_leg(self, leg: Leg) -> None:
        leg.start_close()

    async def _discard(self, leg: Leg) -> None:
        await leg.close()

    async def close(self, reason: media.CloseReason) -> None:
        """Stop everything from and to this participant (every step runs)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.keyframes.close()
        for feed in self.feeds.values():
            feed.close()
        legs = [leg for leg in (self.uplink, self.downlink, self._offered) if leg is not None]
        steps: list[Any] = [self._discard(leg) for leg in legs]
        if self.tap is not None:
            steps.append(self.tap.stop())
        for result in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("session.close_step_failed", error=type(result).__name__, **self.fields)
        self._emit(
            SessionClosed(
                call_id=self.call_id,
                session_id=self.session_id,
                participant_id=self.participant_id,
                node_id=self._node.node_id,
                reason=reason,
            )
        )
        log.info("session.closed", reason=reason, **self.fields)
