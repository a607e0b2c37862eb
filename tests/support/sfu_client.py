"""A reusable SFU participant for tests and benchmarks: aiortc uplink + downlink of slots.

It speaks the media node's contract (:mod:`schemas.media`, :mod:`schemas.media_events`)
over any :class:`SfuTransport`: an object with an async ``request`` (request Struct in,
reply Struct out, typed errors raised as :class:`schemas.errors.RpcFailed`) and a
``watch`` that feeds it the media events of its call. :class:`NatsSfuTransport` talks to a
node over NATS; a gateway's test client can provide a socket.io one.

Usage::

    client = SfuClient(NatsSfuTransport(bus, node_id), call_id, "alice", colour=(200, 30, 30))
    await client.join()                    # open_session, publish, open/answer downlink
    await client.wait_for(lambda c: c.showing() == {"bob", "carol"}, timeout=20)
    client.speaking = True                 # its microphone starts "speaking"
    await client.set_preferences(pinned=["carol"])
    await client.leave()                   # close_session, close both peer connections

What it tracks (all updated on the event loop; :meth:`wait_for` re-checks on each change):

- ``slots``: one :class:`SlotView` per downlink m-line (index, mid, kind, SSRC), with the
  node's mapping (``publisher_id``, ``showing_id``) from the last applied ``SlotsChanged``
  (versions only grow), and what arrived in it: decoded video frames with their colour and
  frame counter (``decode=True``), or counted RTP packets (``decode=False``, for load);
  ``frames`` in order as ``(monotonic time, colour, counter)``.
- ``events``: every media event for its session; ``video_forwarded``: the last video
  demand (with ``pause_on_demand`` the client stops and resumes its camera accordingly).

Modes: ``prewarm=True`` connects both legs but sends nothing (its senders carry no track)
until :meth:`start_sending`; ``drop_video_every=n`` loses every n-th video RTP packet on
the downlink before aiortc sees it (the node must repair it from the slot's history).
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.media import (
    AnswerDownlink,
    CloseSession,
    DownlinkOffer,
    LeasesRenewed,
    MediaAck,
    MediaRequest,
    OpenDownlink,
    OpenSession,
    Publish,
    RenewLeases,
    SdpAnswer,
    SessionOpened,
    SetPreferences,
)
from schemas.media_events import AnyMediaEvent, SlotsChanged, VideoDemandChanged
from tests.support.media_peer import (
    PatternVideoTrack,
    Rgb,
    SyntheticAudioTrack,
    body_colour,
    read_counter,
)
from tests.support.waiting import until

T = TypeVar("T")
EventHandler = Callable[[AnyMediaEvent], None]


class SfuTransport(Protocol):
    """How a client reaches one media node (see the module docstring)."""

    async def request(self, request: MediaRequest, reply_type: type[T], timeout: float) -> T: ...

    async def watch(self, call_id: str, handler: EventHandler) -> Callable[[], Awaitable[None]]:
        """Deliver the call's media events to ``handler``; returns an unsubscribe."""
        ...


class NatsSfuTransport:
    """:class:`SfuTransport` over NATS: ``media.rpc.<node>.<verb>`` and ``media.evt.<call>.*``."""

    def __init__(self, bus: Bus, node_id: str) -> None:
        self.bus = bus
        self.node_id = node_id

    async def request(self, request: MediaRequest, reply_type: type[T], timeout: float) -> T:
        subject = subjects.media_rpc(self.node_id, request.verb)
        reply: T = await self.bus.request(subject, request, reply_type, timeout=timeout)
        return reply

    async def watch(self, call_id: str, handler: EventHandler) -> Callable[[], Awaitable[None]]:
        async def deliver(event: AnyMediaEvent, _: Incoming) -> None:
            handler(event)

        sub = await self.bus.subscribe(subjects.media_events_of(call_id), AnyMediaEvent, deliver)
        await self.bus.flush()
        return sub.unsubscribe


@dataclass
class SlotView:
    """One m-line of the downlink as the client sees it."""

    index: int
    mid: str
    kind: str
    ssrc: int
    publisher_id: str | None = None
    showing_id: str | None = None
    #: (monotonic time, decoded colour, frame counter) per decoded video frame.
    frames: list[tuple[float, Rgb, int]] = field(default_factory=list)
    packets: int = 0
    audio_frames: int = 0
    #: When the mapping last named a new ``showing_id`` (monotonic).
    showing_since: float = 0.0


class SfuClient:
    """See the module docstring."""

    def __init__(
        self,
        transport: SfuTransport,
        call_id: str,
        participant_id: str,
        *,
        colour: Rgb = (200, 40, 40),
        speaking: bool = False,
        steady_speech: bool = True,
        audio: bool = True,
        video: bool = True,
        prewarm: bool = False,
        decode: bool = True,
        size: tuple[int, int] = (160, 120),
        fps: float = 15.0,
        transcription: bool = False,
        purpose: str = "call",
        video_slots: int | None = None,
        audio_slots: int | None = None,
        lease_s: float = 30.0,
        pause_on_demand: bool = True,
        drop_video_every: int = 0,
        timeout: float = 20.0,
    ) -> None:
        self.transport = transport
        self.call_id = call_id
        self.participant_id = participant_id
        self.colour = colour
        self.decode = decode
        self.prewarm = prewarm
        self.purpose = purpose
        self.transcription = transcription
        self.video_slots = video_slots
        self.audio_slots = audio_slots
        self.lease_s = lease_s
        self.pause_on_demand = pause_on_demand
        self.drop_video_every = drop_video_every
        self.timeout = timeout
        self.audio_track = SyntheticAudioTrack(speaking, steady=steady_speech) if audio else None
        self.video_track = (
            PatternVideoTrack(colour, *size, fps=fps) if video and purpose == "call" else None
        )
        self.session_id = ""
        self.uplink: RTCPeerConnection | None = None
        self.downlink: RTCPeerConnection | None = None
        self.slots: list[SlotView] = []
        self.version = 0
        self.events: list[AnyMediaEvent] = []
        self.video_forwarded = True
        self.dropped_packets = 0
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unwatch: Callable[[], Awaitable[None]] | None = None
        self._senders: dict[str, Any] = {}
        self._sending = not prewarm

    # --- state helpers ----------------------------------------------------------------------
    @property
    def speaking(self) -> bool:
        return bool(self.audio_track and self.audio_track.speaking)

    @speaking.setter
    def speaking(self, on: bool) -> None:
        if self.audio_track is not None:
            if on and not self.audio_track.speaking:
                self.audio_track.spoke_at = time.monotonic()
            self.audio_track.speaking = on

    def video_slots_showing(self) -> dict[int, str | None]:
        return {s.index: s.showing_id for s in self.slots if s.kind == "video"}

    def showing(self, kind: str = "video") -> set[str]:
        """Who the node says the slots of ``kind`` show now."""
        return {s.showing_id for s in self.slots if s.kind == kind and s.showing_id}

    def assigned(self, kind: str = "video") -> set[str]:
        return {s.publisher_id for s in self.slots if s.kind == kind and s.publisher_id}

    def slot_of(self, publisher_id: str, kind: str = "video") -> SlotView | None:
        return next(
            (s for s in self.slots if s.kind == kind and s.showing_id == publisher_id), None
        )

    async def wait_for(self, predicate: Callable[["SfuClient"], bool], timeout: float) -> None:
        await until(lambda: predicate(self), self.changed, timeout)

    # --- the contract -----------------------------------------------------------------------
    async def request(self, request: MediaRequest, reply_type: type[T]) -> T:
        return await self.transport.request(request, reply_type, self.timeout)

    async def join(self) -> None:
        """Open the session, publish, and (for ``call`` sessions) connect the downlink."""
        self._unwatch = await self.transport.watch(self.call_id, self._on_event)
        opened = await self.request(
            OpenSession(
                call_id=self.call_id,
                participant_id=self.participant_id,
                purpose=self.purpose,  # type: ignore[arg-type]
                transcription=self.transcription,
                lease_s=self.lease_s,
                video_slots=self.video_slots,
                audio_slots=self.audio_slots,
            ),
            SessionOpened,
        )
        self.session_id = opened.session_id
        await self.publish()
        if self.purpose == "call":
            await self.open_downlink()

    async def publish(self) -> SdpAnswer:
        """(Re-)publish the uplink; a second call replaces the node's uplink leg."""
        if self.uplink is not None:
            await self.uplink.close()
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.uplink = pc
        tracks: list[tuple[str, MediaStreamTrack | None]] = []
        if self.audio_track is not None:
            tracks.append(("audio", self.audio_track))
        if self.video_track is not None:
            tracks.append(("video", self.video_track))
        for kind, track in tracks:
            sending = track if self._sending and (kind == "audio" or self.video_forwarded) else None
            transceiver = pc.addTransceiver(sending or kind, direction="sendonly")
            self._senders[kind] = transceiver.sender
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.request(
            Publish(session_id=self.session_id, sdp=pc.localDescription.sdp), SdpAnswer
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
        return answer

    async def open_downlink(self) -> None:
        """(Re-)open the downlink: answer the node's offer of slots."""
        offer = await self.request(OpenDownlink(session_id=self.session_id), DownlinkOffer)
        old = self.downlink
        # max-bundle: aiortc's default policy breaks an offer with two m-lines of one kind
        # (the second shares a transport its BUNDLE handling then stops).
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.downlink = pc
        self.slots = [
            SlotView(index=s.index, mid=s.mid, kind=s.kind, ssrc=s.ssrc) for s in offer.slots
        ]
        by_mid = {s.mid: s for s in self.slots}
        self._apply_slots(offer.version, offer.slots, force=True)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
            view = by_mid.get(str(transceiver.mid))
            if view is None:
                return
            if not self.decode or track.kind == "audio":
                self._count_only(transceiver, view)
                return
            self._tasks.append(asyncio.get_running_loop().create_task(self._pump(track, view)))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        if self.drop_video_every:
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    self._lossy(transceiver)
        await pc.setLocalDescription(await pc.createAnswer())
        await self.request(
            AnswerDownlink(session_id=self.session_id, sdp=pc.localDescription.sdp), MediaAck
        )
        if old is not None:
            await old.close()

    async def set_preferences(
        self, *, pinned: list[str] | None = None, video_tiles: int | None = None
    ) -> None:
        await self.request(
            SetPreferences(
                session_id=self.session_id, pinned=pinned or [], video_tiles=video_tiles
            ),
            MediaAck,
        )

    async def renew(self) -> LeasesRenewed:
        return await self.request(RenewLeases(session_ids=[self.session_id]), LeasesRenewed)

    async def start_sending(self) -> None:
        """Pre-warm is over: put the tracks on the (already connected) senders."""
        self._sending = True
        if self.audio_track is not None and "audio" in self._senders:
            self._senders["audio"].replaceTrack(self.audio_track)
        if self.video_track is not None and "video" in self._senders and self.video_forwarded:
            self._senders["video"].replaceTrack(self.video_track)

    async def leave(self, *, tell_node: bool = True) -> None:
        """Close the session (unless the node is gone) and both peer connections."""
        if tell_node and self.session_id:
            with contextlib.suppress(Exception):
                await self.transport.request(CloseSession(session_id=self.session_id), MediaAck, 5)
        self.session_id = ""
        await self.close()

    async def close(self) -> None:
        for pc in (self.downlink, self.uplink):
            if pc is not None:
                await pc.close()
        self.downlink = self.uplink = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._unwatch is not None:
            with contextlib.suppress(Exception):
                await self._unwatch()
            self._unwatch = None

    # --- events -----------------------------------------------------------------------------
    def _on_event(self, event: AnyMediaEvent) -> None:
        if event.session_id != self.session_id:
            return
        self.events.append(event)
        if isinstance(event, SlotsChanged):
            self._apply_slots(event.version, event.slots)
        elif isinstance(event, VideoDemandChanged):
            self.video_forwarded = event.forwarded
            sender = self._senders.get("video")
            if self.pause_on_demand and sender is not None and self._sending:
                sender.replaceTrack(self.video_track if event.forwarded else None)
        self.changed.set()

    def _apply_slots(self, version: int, slots: list[Any], *, force: bool = False) -> None:
        if version <= self.version and not force:
            return
        self.version = max(version, self.version)
        now = time.monotonic()
        for info in slots:
            if info.index < len(self.slots) and self.slots[info.index].ssrc == info.ssrc:
                view = self.slots[info.index]
                if info.showing_id != view.showing_id:
                    view.showing_since = now
                view.publisher_id = info.publisher_id
                view.showing_id = info.showing_id
        self.changed.set()

    # --- media ------------------------------------------------------------------------------
    async def _pump(self, track: MediaStreamTrack, view: SlotView) -> None:
        try:
            while True:
                frame: Any = await track.recv()
                image = frame.to_ndarray(format="rgb24")
                view.frames.append((time.monotonic(), body_colour(image), read_counter(image)))
                view.packets += 1
                self.changed.set()
        except MediaStreamError:
            return

    def _count_only(self, transceiver: Any, view: SlotView) -> None:
        """Count RTP packets without depacketising or decoding (load generators)."""
        receiver = transceiver.receiver

        async def count(packet: Any, arrival_time_ms: int) -> None:
            del arrival_time_ms
            view.packets += 1
            if view.kind == "audio":
                view.audio_frames += 1
            elif packet.marker:
                view.frames.append((time.monotonic(), (0, 0, 0), -1))
            self.changed.set()

        receiver._handle_rtp_packet = count

    def _lossy(self, transceiver: Any) -> None:
        """Lose every n-th original video packet before the receiver sees it (not RTX)."""
        receiver = transceiver.receiver
        handle = receiver._handle_rtp_packet
        seen = 0
        every = self.drop_video_every

        async def lossy(packet: Any, arrival_time_ms: int) -> None:
            nonlocal seen
            codecs = transceiver._codecs
            media_pt = codecs[0].payloadType if codecs else None
            if packet.payload_type == media_pt:
                seen += 1
                if seen % every == 0:
                    self.dropped_packets += 1
                    return
            await handle(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = lossy
