"""A reusable call client: a Socket.IO connection to a gateway plus aiortc peers.

Tests, later issues and benchmarks drive real calls with it::

    alice = await CallClient.connect(gw_a, token_a, name="alice")
    bob = await CallClient.connect(gw_b, token_b, name="bob")
    ack = await alice.initiate(conversation_id)
    incoming = await bob.wait_for("call:incoming")
    await bob.accept(incoming["callId"])          # alice's client offers to bob on its own
    await alice.wait_media(); await bob.wait_media()

Every server event is recorded; :meth:`wait_for` waits for the next one matching a
predicate (never sleep-and-hope). With ``media=True`` the client answers offers and, when a
participant joins a call it is in, offers to the newcomer (the rule: those already in the
call offer to the one who arrives), sending audio and small video frames and counting the
frames it receives per kind.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import socketio
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from av import VideoFrame

from tests.support.waiting import until

Payload = dict[str, Any]


class SmallVideoTrack(VideoStreamTrack):
    """160x120 frames (aiortc's 30 fps clock): cheap to encode on a small machine."""

    def __init__(self) -> None:
        super().__init__()
        self._frame = np.zeros((120, 160, 3), dtype=np.uint8)
        self._frame[:, :, 1] = 160
        self._count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self._frame, format="bgr24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


@dataclass
class PeerLink:
    """One aiortc peer connection to one remote participant."""

    remote_id: str
    pc: RTCPeerConnection
    frames: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    first_frame_at: dict[str, float] = field(default_factory=dict)
    candidates_received: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class CallClient:
    """One person's client (a socket and, optionally, peer connections)."""

    def __init__(self, url: str, token: str, *, name: str = "", media: bool = True) -> None:
        self.url = url
        self.token = token
        self.name = name
        self.media = media
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Payload, float]] = []
        self._consumed: set[int] = set()
        self._changed = asyncio.Event()
        self.call_id: str | None = None
        self.participant_id: str | None = None
        self.resume_token: str | None = None
        self.links: dict[str, PeerLink] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._beating = False
        #: Offers and answers in progress (kept referenced: asyncio holds tasks weakly).
        self._tasks: set[asyncio.Task[None]] = set()
        self._media_changed = asyncio.Event()
        self.sio.on("*", self._on_event)

    # --- connection ----------------------------------------------------------------------
    @classmethod
    async def connect(
        cls, url: str, token: str, *, name: str = "", media: bool = True, timeout: float = 10
    ) -> "CallClient":
        client = cls(url, token, name=name, media=media)
        await client.open(timeout=timeout)
        return client

    async def open(self, timeout: float = 10) -> None:
        await self.sio.connect(
            self.url,
            auth={"token": self.token},
            transports=["websocket"],
            wait_timeout=timeout,
        )

    async def close(self) -> None:
        await self.stop_heartbeats()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in list(self.links.values()):
            await self._close_link(link)
        self.links.clear()
        await self.drop()

    async def drop(self, timeout: float = 5.0) -> None:
        """Close the socket only (as a lost network would); peer connections stay."""
        self._beating = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), timeout)

    async def _on_event(self, event: str, data: Any = None) -> None:
        payload = data if isinstance(data, dict) else {"value": data}
        self.events.append((event, payload, time.monotonic()))
        self._changed.set()
        if event == "call:signal" and self.media:
            self._spawn(self._on_signal(payload))
        elif event == "call:participant-joined" and self.media:
            joined = payload.get("participant", {}).get("participantId")
            if joined and payload.get("callId") == self.call_id and joined != self.participant_id:
                self._spawn(self.offer_to(joined))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- events ----------------------------------------------------------------------------
    async def wait_for(
        self,
        event: str,
        predicate: Callable[[Payload], bool] | None = None,
        timeout: float = 10.0,
    ) -> Payload:
        """The next not-yet-returned ``event`` matching ``predicate`` (waits up to timeout)."""

        async def until() -> Payload:
            while True:
                for i, (name, payload, _) in enumerate(self.events):
                    if i in self._consumed or name != event:
                        continue
                    if predicate is None or predicate(payload):
                        self._consumed.add(i)
                        return payload
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            seen = [name for name, _, _ in self.events]
            raise AssertionError(
                f"{self.name}: no {event!r} within {timeout}s; saw {seen[-15:]}"
            ) from None

    def seen(self, event: str) -> list[Payload]:
        return [p for name, p, _ in self.events if name == event]

    async def request(self, event: str, data: Any = None, timeout: float = 10.0) -> Payload:
        """Emit with an acknowledgement; returns the ack (``{"ok": ...}``)."""
        ack = await self.sio.call(event, data, timeout=timeout)
        assert isinstance(ack, dict), f"ack of {event} is not an object: {ack!r}"
        return ack

    async def _must(self, event: str, data: Any) -> Payload:
        ack = await self.request(event, data)
        if not ack.get("ok"):
            raise AssertionError(f"{self.name}: {event} refused: {ack.get('error')}")
        return ack

    # --- call actions ----------------------------------------------------------------------
    def _entered(self, ack: Payload) -> None:
        self.call_id = ack["call"]["callId"]
        self.participant_id = ack["participantId"]
        self.resume_token = ack.get("resumeToken")

    async def initiate(self, conversation_id: str, media: str = "video") -> Payload:
        ack = await self._must("call:initiate", {"conversationId": conversation_id, "media": media})
        self._entered(ack)
        return ack

    async def accept(self, call_id: str) -> Payload:
        ack = await self._must("call:accept", {"callId": call_id})
        self._entered(ack)
        return ack

    async def join(self, call_id: str, resume_token: str | None = None) -> Payload:
        data: Payload = {"callId": call_id}
        if resume_token:
            data["resumeToken"] = resume_token
        ack = await self._must("call:join", data)
        self._entered(ack)
        return ack

    async def decline(self, call_id: str) -> Payload:
        return await self._must("call:decline", {"callId": call_id})

    async def leave(self) -> Payload:
        assert self.call_id is not None
        ack = await self._must("call:leave", {"callId": self.call_id})
        for link in list(self.links.values()):
            await self._close_link(link)
        self.links.clear()
        return ack

    async def end(self) -> Payload:
        assert self.call_id is not None
        return await self._must("call:end", {"callId": self.call_id})

    async def toggle_audio(self, enabled: bool) -> Payload:
        return await self._must("call:toggle-audio", {"callId": self.call_id, "enabled": enabled})

    async def toggle_video(self, enabled: bool) -> Payload:
        return await self._must("call:toggle-video", {"callId": self.call_id, "enabled": enabled})

    async def heartbeat(self) -> Payload:
        return await self._must("call:heartbeat", {"callId": self.call_id})

    def start_heartbeats(self, interval_s: float) -> None:
        self._beating = True

        async def loop() -> None:
            # The flag, not only cancel(): on Python 3.11 ``asyncio.wait_for`` (inside
            # ``sio.call``) can swallow a cancellation that races its own completion.
            while self._beating:
                await asyncio.sleep(interval_s)
                with contextlib.suppress(Exception):
                    await self.request("call:heartbeat", {"callId": self.call_id}, timeout=5)

        self._heartbeat = asyncio.get_running_loop().create_task(loop())

    async def stop_heartbeats(self) -> None:
        self._beating = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._heartbeat, 10)
            self._heartbeat = None

    async def signal(self, to: str, type_: str, **fields: Any) -> Payload:
        return await self.request(
            "call:signal", {"callId": self.call_id, "to": to, "type": type_, **fields}
        )

    # --- media (aiortc) --------------------------------------------------------------------
    def _new_link(self, remote_id: str) -> PeerLink:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        link = PeerLink(remote_id, pc)
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(SmallVideoTrack())

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            link.tasks.append(asyncio.get_running_loop().create_task(self._count(link, track)))

        self.links[remote_id] = link
        return link

    async def _count(self, link: PeerLink, track: MediaStreamTrack) -> None:
        kind = track.kind
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                await track.recv()
                link.frames[kind] = link.frames.get(kind, 0) + 1
                link.first_frame_at.setdefault(kind, time.monotonic())
                self._media_changed.set()

    async def offer_to(self, remote_id: str) -> None:
        link = self.links.get(remote_id) or self._new_link(remote_id)
        offer = await link.pc.createOffer()
        await link.pc.setLocalDescription(offer)
        local = link.pc.localDescription
        await self.signal(remote_id, "offer", sdp=local.sdp)
        await self._send_candidates(remote_id, local.sdp)

    async def _send_candidates(self, remote_id: str, sdp: str) -> None:
        """aiortc puts candidates in the SDP; also trickle them, as a browser would."""
        mid = None
        index = -1
        for line in sdp.splitlines():
            if line.startswith("m="):
                index += 1
            elif line.startswith("a=mid:"):
                mid = line[len("a=mid:") :]
            elif line.startswith("a=candidate:"):
                candidate = {"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index}
                await self.signal(remote_id, "ice-candidate", candidate=candidate)

    async def _on_signal(self, payload: Payload) -> None:
        remote = payload.get("from")
        if not isinstance(remote, str):
            return
        kind = payload.get("type")
        try:
            if kind in ("offer", "ice-restart"):
                link = self.links.get(remote) or self._new_link(remote)
                await link.pc.setRemoteDescription(RTCSessionDescription(payload["sdp"], "offer"))
                answer = await link.pc.createAnswer()
                await link.pc.setLocalDescription(answer)
                await self.signal(remote, "answer", sdp=link.pc.localDescription.sdp)
            elif kind == "answer" and remote in self.links:
                await self.links[remote].pc.setRemoteDescription(
                    RTCSessionDescription(payload["sdp"], "answer")
                )
            elif kind == "ice-candidate" and remote in self.links:
                link = self.links[remote]
                link.candidates_received += 1
                init = payload.get("candidate") or {}
                text = init.get("candidate", "")
                if text and link.pc.remoteDescription is not None:
                    cand = candidate_from_sdp(text.split(":", 1)[1])
                    cand.sdpMid = init.get("sdpMid")
                    cand.sdpMLineIndex = init.get("sdpMLineIndex")
                    with contextlib.suppress(Exception):
                        await link.pc.addIceCandidate(cand)
        except Exception as exc:  # keep the client alive; the test will time out visibly
            self.events.append(("client:error", {"error": repr(exc)}, time.monotonic()))
            self._changed.set()

    def frames(self, kind: str) -> int:
        return sum(link.frames.get(kind, 0) for link in self.links.values())

    async def wait_media(self, min_frames: int = 5, timeout: float = 20.0) -> None:
        """Until at least ``min_frames`` audio and video frames arrived from the peers."""

        def flowing() -> bool:
            return self.frames("audio") >= min_frames and self.frames("video") >= min_frames

        try:
            await until(flowing, self._media_changed, timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: media not flowing (audio={self.frames('audio')}, "
                f"video={self.frames('video')})"
            ) from None

    async def close_links(self) -> None:
        """Close every peer connection (after a call ends)."""
        for link in list(self.links.values()):
            await self._close_link(link)
        self.links.clear()

    async def _close_link(self, link: PeerLink) -> None:
        for task in link.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await link.pc.close()
