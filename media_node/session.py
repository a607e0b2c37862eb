"""One participant in one call on this node: its publish leg and its subscriptions.

Each session has (at most) one publish peer connection (the client offers its microphone
and camera; the node answers with Opus and VP8 pinned) and one peer connection per
subscription (the node offers one publisher's audio and video; the client answers).
Separate connections per subscription avoid renegotiation, which aiortc handles poorly;
the cost is one ICE/DTLS association per subscription (see the README section).
"""

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from media_node import passthrough
from media_node.forwarder import ForwardedTrack, ForwardingStats, TrackForwarder
from media_node.jitter import use_marker_jitter_buffer
from media_node.keyframes import KeyframeRequester
from media_node.sdp import (
    PINNED,
    UnusableSdp,
    announce_address,
    check_description,
    negotiated_mime,
    pinned_codecs,
    primary_payload_type,
)
from media_node.tap import AudioTap, ChunkSink, TapStats, UtteranceCutter, VadKind
from schemas.bus import RpcFailure
from schemas.ids import new_id
from schemas.logs import get_logger

log = get_logger("media_node.session")

KINDS = ("audio", "video")


@dataclass
class NodeContext:
    """What every session of a node shares."""

    node_id: str
    forwarding: ForwardingStats
    taps: TapStats
    executor: Executor
    publish_chunk: ChunkSink
    vad: VadKind = "silero"
    keyframe_interval_s: float = 0.3
    max_hole_s: float = 0.5
    video_queue_frames: int = 64
    audio_queue_frames: int = 50
    tap_queue_packets: int = 250
    new_cutter: Callable[[], UtteranceCutter] = UtteranceCutter
    public_ip: str = ""
    #: STUN/TURN servers for the node's own candidates; none by default (aiortc would
    #: otherwise ask a public Google STUN server for every connection).
    stun_urls: tuple[str, ...] = ()

    def peer_connection(self) -> RTCPeerConnection:
        servers = [RTCIceServer(urls=url) for url in self.stun_urls]
        return RTCPeerConnection(RTCConfiguration(iceServers=servers))


LevelSink = Callable[[str, float], None]


class ParticipantSession:
    """A participant's media on this node (see the module docstring)."""

    def __init__(
        self,
        *,
        session_id: str,
        call_id: str,
        participant_id: str,
        transcription: bool,
        language: str,
        node: NodeContext,
        on_level: LevelSink,
    ) -> None:
        self.session_id = session_id
        self.call_id = call_id
        self.participant_id = participant_id
        self.transcription = transcription
        self.language = language
        self._node = node
        self._on_level = on_level
        self._fields = {"call_id": call_id, "participant_id": participant_id}
        #: Subscribers' tracks of this participant's media, per kind.
        self.outlets: dict[str, set[ForwardedTrack]] = {kind: set() for kind in KINDS}
        self.publish_pc: Any = None
        self.forwarders: dict[str, TrackForwarder] = {}
        self._video_hooks: passthrough.ReceiverHooks | None = None
        self.keyframes = KeyframeRequester(
            self._send_pli, min_interval_s=node.keyframe_interval_s, log_fields=self._fields
        )
        self.tap: AudioTap | None = None
        self.level_from_rtp = False
        #: Subscriptions this participant receives.
        self.subscriptions: dict[str, Subscription] = {}
        #: Subscriptions of others to this participant.
        self.subscribers: dict[str, Subscription] = {}
        self.closed = False
        # Held while aiortc negotiates the publish leg. Closing a peer connection while it
        # gathers ICE leaks the sockets gathered after the close (aioice keeps no handle on
        # them), so closing waits for the negotiation in hand to finish first.
        self._negotiating = asyncio.Lock()

    # --- publishing ------------------------------------------------------------------
    async def publish(self, offer_sdp: str) -> str:
        """Answer the client's offer for what it sends; start forwarding it."""
        if self.closed:
            raise RpcFailure("not_found", "this session was closed")
        if self.publish_pc is not None:
            raise RpcFailure("conflict", "this session already published")
        try:
            counts = check_description(offer_sdp)
        except UnusableSdp as exc:
            raise RpcFailure("bad_request", f"unusable SDP offer: {exc}") from None
        if counts.get("audio", 0) > 1 or counts.get("video", 0) > 1:
            raise RpcFailure("bad_request", "at most one audio and one video track")
        if not counts.get("audio") and not counts.get("video"):
            raise RpcFailure("bad_request", "the offer carries no audio or video")
        pc = self._node.peer_connection()
        # Set before the first await: a concurrent publish sees it and gets ``conflict``.
        self.publish_pc = pc
        # Pin the codecs before setRemoteDescription, which filters them: a browser that
        # prefers H.264 would otherwise get H.264, which no subscriber could be sent.
        for kind in KINDS:
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(pinned_codecs(kind, sending=False))

        @pc.on("track")
        def on_track(track: Any) -> None:
            # Fired before receive() starts aiortc's decoder thread: just in time.
            receiver = next(
                (t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None
            )
            passthrough.enable_passthrough(track, receiver)

        try:
            async with self._negotiating:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
                self._still_publishing(pc)
                receiving = [t for t in pc.getTransceivers() if t.receiver.track is not None]
                if not receiving:
                    raise RpcFailure("bad_request", "the offer sends no audio or video")
                for transceiver in receiving:
                    if negotiated_mime(transceiver) not in PINNED[transceiver.kind]:
                        raise RpcFailure(
                            "bad_request", f"{transceiver.kind}: only Opus and VP8 are forwarded"
                        )
                await pc.setLocalDescription(await pc.createAnswer())
            self._still_publishing(pc)
        except RpcFailure:
            await self._drop_publish_pc(pc)
            raise
        except Exception as exc:  # aiortc raises ValueError, InternalError, ... on bad SDP
            await self._drop_publish_pc(pc)
            raise RpcFailure("bad_request", f"unusable SDP offer: {type(exc).__name__}") from None
        for transceiver in receiving:
            self._start_forwarding(transceiver)
        pc.on("connectionstatechange", self._on_publish_state)
        log.info("session.published", kinds=[t.kind for t in receiving], **self._fields)
        return announce_address(str(pc.localDescription.sdp), self._node.public_ip)

    def _still_publishing(self, pc: Any) -> None:
        """After an await: the session may have been closed (or replaced) meanwhile."""
        if self.closed or self.publish_pc is not pc:
            # Starting forwarders and a tap now would leak them: close() already ran.
            raise RpcFailure("not_found", "this session was closed")

    def _start_forwarding(self, transceiver: Any) -> None:
        kind = transceiver.kind
        taps: list[Callable[[Any], None]] = []
        if kind == "audio" and self.transcription:
            self.tap = AudioTap(
                call_id=self.call_id,
                participant_id=self.participant_id,
                language=self.language,
                vad=self._node.vad,
                executor=self._node.executor,
                publish=self._node.publish_chunk,
                stats=self._node.taps,
                on_level=self._level_from_tap,
                queue_size=self._node.tap_queue_packets,
                new_cutter=self._node.new_cutter,
            )
            self.tap.start()
            taps.append(self.tap.feed)
        forwarder = TrackForwarder(
            transceiver.receiver.track,
            kind,
            subscribers=self.outlets[kind],
            stats=self._node.forwarding,
            taps=taps,
            log_fields=self._fields,
        )
        if kind == "audio":
            passthrough.ReceiverHooks(transceiver.receiver, observe=self._observe_audio)
        else:
            # Release each frame on its last packet rather than on the next frame's first.
            use_marker_jitter_buffer(
                transceiver.receiver, max_hole_s=self._node.max_hole_s, log_fields=self._fields
            )
            primary_pt = primary_payload_type(transceiver)
            keyframes = self.keyframes

            def observe_video(packet: Any) -> None:
                if packet.payload_type == primary_pt and packet.ssrc != keyframes.primary_ssrc:
                    keyframes.set_primary_ssrc(packet.ssrc)

            self._video_hooks = passthrough.ReceiverHooks(
                transceiver.receiver, observe=observe_video, on_own_pli=forwarder.upstream_lost
            )
        self.forwarders[kind] = forwarder
        forwarder.start()

    def _observe_audio(self, packet: Any) -> None:
        if self.closed:
            return  # packets still arriving while closing must not revive a left speaker
        level = packet.extensions.audio_level
        if level is not None:
            self.level_from_rtp = True
            self._on_level(self.participant_id, -float(level[1]))

    def _level_from_tap(self, dbov: float) -> None:
        if not self.level_from_rtp and not self.closed:
            self._on_level(self.participant_id, dbov)

    async def _send_pli(self, ssrc: int) -> None:
        if self._video_hooks is not None:
            await self._video_hooks.send_pli(ssrc)

    def request_keyframe(self, reason: str) -> None:
        self.keyframes.request(reason)

    def _on_publish_state(self) -> None:
        pc = self.publish_pc
        if pc is not None:
            log.info("session.publish_state", state=pc.connectionState, **self._fields)

    async def _drop_publish_pc(self, pc: Any = None) -> None:
        """Close the publish leg (``pc``: only if it is still this session's)."""
        if pc is None:
            pc = self.publish_pc
        if self.publish_pc is pc:
            self.publish_pc = None
        if pc is not None:
            async with self._negotiating:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), 5)

    # --- outlets (this participant's media toward subscribers) ------------------------
    def new_outlet(self, kind: str) -> ForwardedTrack:
        capacity = (
            self._node.video_queue_frames if kind == "video" else self._node.audio_queue_frames
        )
        track = ForwardedTrack(
            kind,
            on_keyframe_needed=self.request_keyframe,
            stats=self._node.forwarding,
            capacity=capacity,
        )
        self.outlets[kind].add(track)
        if kind == "video":
            self.request_keyframe("new_subscriber")
        return track

    def remove_outlet(self, track: ForwardedTrack) -> None:
        self.outlets[track.kind].discard(track)
        track.stop()

    def new_peer_connection(self) -> RTCPeerConnection:
        """A peer connection with this node's ICE servers."""
        return self._node.peer_connection()

    @property
    def public_ip(self) -> str:
        """The address this node announces in its candidates (empty: its own)."""
        return self._node.public_ip

    @property
    def forwarded_streams(self) -> int:
        return sum(len(tracks) for tracks in self.outlets.values())

    # --- closing -----------------------------------------------------------------------
    async def close(self) -> None:
        """Stop publishing and every subscription from or to this participant."""
        if self.closed:
            return
        self.closed = True
        # Every step runs even if one fails: a half-closed session leaks peer connections
        # and tasks. Subscriptions close concurrently (each is its own ICE/DTLS teardown).
        subs = [*self.subscriptions.values(), *self.subscribers.values()]
        steps: list[Any] = [sub.close() for sub in subs]
        self.keyframes.close()
        steps += [forwarder.stop() for forwarder in self.forwarders.values()]
        if self.tap is not None:
            steps.append(self.tap.stop())
        steps.append(self._drop_publish_pc())
        for result in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning(
                    "session.close_step_failed", error=type(result).__name__, **self._fields
                )
        log.info("session.closed", **self._fields)


class Subscription:
    """One subscriber receiving one publisher's audio and video on its own connection."""

    def __init__(self, subscriber: ParticipantSession, publisher: ParticipantSession) -> None:
        self.subscription_id = new_id()
        self.subscriber = subscriber
        self.publisher = publisher
        self.pc: Any = None
        self.tracks: list[ForwardedTrack] = []
        self.answered = False
        self._closed = False
        self._negotiating = asyncio.Lock()  # see ParticipantSession._negotiating

    async def offer(self) -> str:
        """Create the node's SDP offer carrying the publisher's media (ICE gathered)."""
        pc = self.subscriber.new_peer_connection()
        self.pc = pc
        publisher = self.publisher
        for kind in KINDS:
            track = publisher.new_outlet(kind)
            self.tracks.append(track)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(pinned_codecs(kind, sending=True))
            if kind == "video":
                # The subscriber's PLI/FIR goes to the publisher (rate-limited there).
                passthrough.on_keyframe_request(
                    transceiver.sender, lambda: publisher.request_keyframe("subscriber_pli")
                )
        self.subscriber.subscriptions[self.subscription_id] = self
        publisher.subscribers[self.subscription_id] = self
        try:
            async with self._negotiating:
                await pc.setLocalDescription(await pc.createOffer())
        except BaseException:
            await self.close()  # leave no outlet or half-made subscription behind
            raise
        if self._closed:
            # Either participant left while ICE was gathered: no offer for a dead leg.
            raise RpcFailure("not_found", "that participant left")
        log.info(
            "subscription.offered",
            call_id=publisher.call_id,
            participant_id=self.subscriber.participant_id,
            publisher_id=publisher.participant_id,
            subscription_id=self.subscription_id,
        )
        return announce_address(str(pc.localDescription.sdp), self.subscriber.public_ip)

    async def answer(self, sdp: str) -> None:
        """Apply the client's answer; the media starts once ICE and DTLS connect."""
        if self._closed:
            raise RpcFailure("not_found", "no such subscription in this session")
        if self.answered:
            raise RpcFailure("conflict", "this subscription was already answered")
        try:
            check_description(sdp)
        except UnusableSdp as exc:
            raise RpcFailure("bad_request", f"unusable SDP answer: {exc}") from None
        # Claimed before the await: a second answer racing this one gets ``conflict``.
        self.answered = True
        try:
            async with self._negotiating:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            self.answered = False  # the client may retry with a usable answer
            if self._closed:
                raise RpcFailure("not_found", "that participant left") from None
            raise RpcFailure("bad_request", f"unusable SDP answer: {type(exc).__name__}") from None
        if self._closed:
            raise RpcFailure("not_found", "that participant left")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.subscriber.subscriptions.pop(self.subscription_id, None)
        self.publisher.subscribers.pop(self.subscription_id, None)
        for track in self.tracks:
            self.publisher.remove_outlet(track)
        if self.pc is not None:
            async with self._negotiating:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.pc.close(), 5)
        log.info(
            "subscription.closed",
            call_id=self.publisher.call_id,
            participant_id=self.subscriber.participant_id,
            publisher_id=self.publisher.participant_id,
            subscription_id=self.subscription_id,
        )
