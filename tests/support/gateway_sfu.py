"""The SFU participant of :mod:`tests.support.sfu_client`, driven through a gateway socket.

A browser never talks to a media node's RPC: the gateway opens its session and relays its
SDP. :class:`SocketSfuTransport` maps the client's contract calls onto the socket protocol
(``call:sfu-publish``, ``call:sfu-downlink``, ``call:sfu-downlink-answer``,
``call:sfu-preferences``) and the gateway's ``call:slots`` / ``call:video-demand`` events
back onto media events, so :class:`GatewaySfuClient` is the very same client the media
node's own tests use, attached to a session the gateway opened.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import socketio
from aiortc.mediastreams import MediaStreamError

from schemas.errors import RpcFailed
from schemas.media import (
    AnswerDownlink,
    DownlinkOffer,
    MediaAck,
    MediaRequest,
    OpenDownlink,
    Publish,
    SdpAnswer,
    SetPreferences,
    Slot,
)
from schemas.media_events import AnyMediaEvent, SlotsChanged, VideoDemandChanged
from tests.support.media_peer import body_colour, read_counter
from tests.support.sfu_client import EventHandler, SfuClient

T = TypeVar("T")
Payload = dict[str, Any]


def _slot(data: Payload) -> Slot:
    return Slot(
        index=data["index"],
        mid=data["mid"],
        kind=data["kind"],
        ssrc=data["ssrc"],
        publisher_id=data.get("participantId"),
        showing_id=data.get("showingId"),
    )


class SocketSfuTransport:
    """:class:`tests.support.sfu_client.SfuTransport` over a gateway's Socket.IO."""

    def __init__(
        self,
        sio: socketio.AsyncClient,
        call_id: str,
        participant_id: str,
        *,
        purpose: str = "call",
    ) -> None:
        self.sio = sio
        self.call_id = call_id
        self.participant_id = participant_id
        #: ``captions``: the participant's audio-only captions uplink (publish only).
        self.purpose = purpose
        self.node_id = ""
        self._handlers: list[EventHandler] = []

    async def _call(self, event: str, data: Payload, timeout: float) -> Payload:
        ack = await self.sio.call(event, {"callId": self.call_id, **data}, timeout=timeout)
        if not isinstance(ack, dict) or not ack.get("ok"):
            error = ack.get("error", {}) if isinstance(ack, dict) else {}
            raise RpcFailed(event, str(error.get("code", "?")), str(error.get("message", "")))
        return ack

    async def request(self, request: MediaRequest, reply_type: type[T], timeout: float) -> T:
        reply: Any
        if isinstance(request, Publish):
            data: Payload = {"sdp": request.sdp}
            if self.purpose != "call":
                data["purpose"] = self.purpose
            ack = await self._call("call:sfu-publish", data, timeout)
            reply = SdpAnswer(
                session_id=ack["sessionId"],
                sdp=ack["sdp"],
                audio=bool(ack.get("audio")),
                video=bool(ack.get("video")),
            )
        elif isinstance(request, OpenDownlink):
            ack = await self._call("call:sfu-downlink", {}, timeout)
            reply = DownlinkOffer(
                session_id=ack["sessionId"],
                sdp=ack["sdp"],
                slots=[_slot(s) for s in ack["slots"]],
                version=ack["version"],
            )
        elif isinstance(request, AnswerDownlink):
            ack = await self._call("call:sfu-downlink-answer", {"sdp": request.sdp}, timeout)
            reply = MediaAck(session_id=ack["sessionId"])
        elif isinstance(request, SetPreferences):
            data = {"pinned": request.pinned, "tiles": request.video_tiles}
            ack = await self._call("call:sfu-preferences", data, timeout)
            reply = MediaAck(session_id=ack["sessionId"])
        else:  # open/close/renew belong to the gateway, never to a browser
            raise RpcFailed(request.verb, "bad_request", "not a client request")
        return reply  # type: ignore[no-any-return]

    async def watch(self, call_id: str, handler: EventHandler) -> Callable[[], Awaitable[None]]:
        self._handlers.append(handler)

        async def unwatch() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unwatch

    def deliver(self, event: str, payload: Payload) -> None:
        """Feed one gateway socket event (``call:slots`` / ``call:video-demand``)."""
        media: AnyMediaEvent
        base = {
            "call_id": self.call_id,
            "session_id": payload.get("sessionId", ""),
            "participant_id": self.participant_id,
            "node_id": self.node_id or "node",
        }
        if event == "call:slots":
            media = SlotsChanged(
                **base,
                version=payload["version"],
                slots=[_slot(s) for s in payload["slots"]],
                reason=payload.get("reason", ""),
            )
        elif event == "call:video-demand":
            media = VideoDemandChanged(
                **base, forwarded=bool(payload["send"]), receivers=payload.get("receivers", 0)
            )
        else:
            return
        for handler in list(self._handlers):
            handler(media)


class GatewaySfuClient(SfuClient):
    """An :class:`SfuClient` attached to the session a gateway opened for it.

    It also records when media from each remote participant arrived (``arrivals``:
    ``(monotonic time, publisher id, kind)``), so the migrating call client can tell when
    the new path carries everyone and how long the longest gap was.
    """

    def __init__(self, transport: SocketSfuTransport, session_id: str, **options: Any) -> None:
        super().__init__(transport, transport.call_id, transport.participant_id, **options)
        self.session_id = session_id
        self.arrivals: list[tuple[float, str, str]] = []
        self.on_media: Callable[[], None] | None = None

    async def join(self) -> None:
        """Publish and connect the downlink of the gateway's session (no open_session),
        both legs at once, as a browser does."""
        self._unwatch = await self.transport.watch(self.call_id, self._on_event)
        if self.purpose == "call":
            await asyncio.gather(self.publish(), self.open_downlink())
        else:
            await self.publish()

    def received_from(self, kind: str = "video") -> set[str]:
        """Remote participants whose media of ``kind`` arrived through the SFU."""
        return {who for _, who, k in self.arrivals if k == kind}

    def _arrived(self, view: Any, kind: str) -> None:
        if view.showing_id:
            self.arrivals.append((time.monotonic(), view.showing_id, kind))
            if self.on_media is not None:
                self.on_media()

    def _count_only(self, transceiver: Any, view: Any) -> None:
        super()._count_only(transceiver, view)
        receiver = transceiver.receiver
        counted = receiver._handle_rtp_packet

        async def count(packet: Any, arrival_time_ms: int) -> None:
            await counted(packet, arrival_time_ms)
            if view.kind == "audio" or packet.marker:
                self._arrived(view, view.kind)

        receiver._handle_rtp_packet = count

    async def _pump(self, track: Any, view: Any) -> None:
        try:
            while True:
                frame: Any = await track.recv()
                image = frame.to_ndarray(format="rgb24")
                view.frames.append((time.monotonic(), body_colour(image), read_counter(image)))
                view.packets += 1
                self._arrived(view, "video")
                self.changed.set()
        except MediaStreamError:
            return
