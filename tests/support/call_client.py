"""A reusable call client: a Socket.IO connection to a gateway plus aiortc media, both modes.

Tests, later issues and benchmarks drive real calls with it::

    alice = await CallClient.connect(gw_a, token_a, name="alice")
    bob = await CallClient.connect(gw_b, token_b, name="bob")
    ack = await alice.initiate(conversation_id)
    incoming = await bob.wait_for("call:incoming")
    await bob.accept(incoming["callId"])          # alice's client offers to bob on its own
    await alice.wait_media(); await bob.wait_media()

Every server event is recorded; :meth:`wait_for` waits for the next one matching a
predicate (never sleep-and-hope). With ``media=True`` the client sends audio and small
video frames (its own colour) and follows the call's mode like a browser would:

- **P2P**: it answers offers and, when a participant joins a call it is in, offers to the
  newcomer (those already in the call offer to the one who arrives) — unless the join makes
  a GROUP call three or more, which goes to the SFU;
- **``call:mode-switch`` to the SFU**: it publishes and opens its downlink on the session
  the gateway opened (or just starts sending on a pre-warmed one), and once every other
  participant's media arrives through the SFU reports ``call:mode-switched``; it drops its
  P2P links only when ``call:mode-changed`` says the migration completed;
- **``call:mode-switch`` back to P2P**: the one told to offers to the other; once the direct
  media arrives it reports, and closes its SFU legs on completion;
- a failed migration keeps the old path (and, in a P2P call of three or more, builds the
  mesh so nobody is without media); a direct path that stops carrying media is reported
  (``call:media-health``), so the call falls back to the SFU.

``arrivals`` records when media from whom arrived over which path, for gap measurements.

Captions: with a ``microphone`` (:class:`tests.support.microphone.Microphone`, espeak-ng
sentences from WAV files) the client sends that speech on every path it has (P2P links, its
SFU uplink, its captions uplink) instead of a tone. :meth:`set_transcription`,
:meth:`set_language`, :meth:`transcribe` (a browser's own transcript, P2P) and
:meth:`captions_uplink` (an audio-only uplink for the server's transcribers, P2P; it also
follows ``call:captions-uplink`` when the gateway moves or drops it) are the captions
calls; :meth:`captions` and :meth:`wait_caption` read the ``call:caption`` events received.
"""

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import socketio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from tests.support.gateway_sfu import GatewaySfuClient, SocketSfuTransport
from tests.support.media_peer import PatternVideoTrack, Rgb, SyntheticAudioTrack
from tests.support.microphone import Microphone
from tests.support.waiting import until

Payload = dict[str, Any]


@dataclass
class PeerLink:
    """One aiortc peer connection to one remote participant."""

    remote_id: str
    pc: RTCPeerConnection
    frames: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    first_frame_at: dict[str, float] = field(default_factory=dict)
    last_frame_at: dict[str, float] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)
    candidates_received: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Reported to the gateway as failed already (once per link).
    reported: bool = False
    #: Tests: drop every incoming RTP packet (a path that stops carrying media).
    cut: bool = False


class CallClient:
    """One person's client (a socket and, optionally, peer connections)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        name: str = "",
        media: bool = True,
        colour: Rgb = (40, 160, 40),
        stall_s: float = 3.0,
        setup_deadline_s: float = 15.0,
        heartbeats: bool = False,
        microphone: Microphone | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.name = name
        self.media = media
        self.colour = colour
        #: A direct path whose video stopped this long is reported failed.
        self.stall_s = stall_s
        #: A direct path that carried nothing this long after it was made is reported failed.
        self.setup_deadline_s = setup_deadline_s
        #: Send ``call:heartbeat`` on the interval the gateway asks for, once in a call.
        self.heartbeats = heartbeats
        #: What this person says, on every path (None: a tone on P2P, bursts on the SFU).
        self.microphone = microphone
        #: The audio-only captions uplink (P2P, server-side transcription), if any.
        self.captions_sfu: GatewaySfuClient | None = None
        self.mode = "p2p"
        self.epoch = 0
        self.conversation_type = ""
        #: Other participants of the call, by id.
        self.others: set[str] = set()
        self.sfu: GatewaySfuClient | None = None
        #: The SFU session carries media (not merely pre-warmed).
        self.sfu_live = False
        self._sfu_transport: SocketSfuTransport | None = None
        #: (monotonic time, remote participant, kind, path) of every frame received.
        self.arrivals: list[tuple[float, str, str, str]] = []
        #: (epoch, mode, seconds from the switch to the report, ok) of each report sent.
        self.reports: list[tuple[int, str, float, bool]] = []
        self._monitor: asyncio.Task[None] | None = None
        #: Direct peer connections ever made (a call that starts on the SFU makes none).
        self.p2p_links_made = 0
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
        cls,
        url: str,
        token: str,
        *,
        name: str = "",
        media: bool = True,
        timeout: float = 10,
        **options: Any,
    ) -> "CallClient":
        client = cls(url, token, name=name, media=media, **options)
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
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in list(self.links.values()):
            await self._close_link(link)
        self.links.clear()
        await self._close_sfu()
        await self._close_captions_uplink()
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
        if self.call_id is not None and payload.get("callId") not in (None, self.call_id):
            return  # (before the join's ack, a switch for the call being joined is kept)
        if event == "call:participant-joined":
            joined = payload.get("participant", {}).get("participantId")
            if joined and joined != self.participant_id:
                self.others.add(joined)
                grows_to_sfu = (
                    self.conversation_type == "GROUP" and payload.get("activeCount", 0) >= 3
                )
                if self.media and self.mode == "p2p" and not grows_to_sfu:
                    self._spawn(self.offer_to(joined))
        elif event == "call:participant-left":
            gone = payload.get("participantId")
            self.others.discard(gone)
            if gone in self.links:
                self._spawn(self._close_link(self.links.pop(gone)))
        elif not self.media:
            return
        elif event == "call:signal":
            self._spawn(self._on_signal(payload))
        elif event == "call:mode-switch":
            self._spawn(self._switch(payload))
        elif event == "call:sfu-prewarm":
            self._spawn(self._prewarm(payload))
        elif event == "call:mode-changed":
            self._spawn(self._mode_changed(payload))
        elif event in ("call:slots", "call:video-demand") and self._sfu_transport is not None:
            self._sfu_transport.deliver(event, payload)
        elif event == "call:captions-uplink":
            self._spawn(self._follow_captions_uplink(payload))
        elif event == "call:ended":
            self._spawn(self._close_sfu())
            self._spawn(self._close_captions_uplink())

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
        call = ack["call"]
        self.call_id = call["callId"]
        self.participant_id = ack["participantId"]
        self.resume_token = ack.get("resumeToken")
        self.mode = call.get("mode", "p2p")
        self.epoch = call.get("epoch", 0)
        self.conversation_type = call.get("conversationType", "")
        self.others = {
            p["participantId"]
            for p in call.get("participants", [])
            if p["participantId"] != self.participant_id
        }
        self._changed.set()
        if self.media and self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(self._watch_health())
        if self.heartbeats and self._heartbeat is None:
            self.start_heartbeats(float(ack.get("heartbeatIntervalS", 5.0)))

    @staticmethod
    def _languages(language: str | None, caption_language: str | None) -> Payload:
        out: Payload = {}
        if language is not None:
            out["language"] = language
        if caption_language is not None:
            out["captionLanguage"] = caption_language
        return out

    async def initiate(
        self,
        conversation_id: str,
        media: str = "video",
        *,
        language: str | None = None,
        caption_language: str | None = None,
    ) -> Payload:
        ack = await self._must(
            "call:initiate",
            {
                "conversationId": conversation_id,
                "media": media,
                **self._languages(language, caption_language),
            },
        )
        self._entered(ack)
        return ack

    async def accept(
        self, call_id: str, *, language: str | None = None, caption_language: str | None = None
    ) -> Payload:
        data = {"callId": call_id, **self._languages(language, caption_language)}
        ack = await self._must("call:accept", data)
        self._entered(ack)
        return ack

    async def join(
        self,
        call_id: str,
        resume_token: str | None = None,
        *,
        language: str | None = None,
        caption_language: str | None = None,
    ) -> Payload:
        data: Payload = {"callId": call_id, **self._languages(language, caption_language)}
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
        await self._close_sfu()
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

    # --- captions ----------------------------------------------------------------------------
    async def set_transcription(self, enabled: bool) -> Payload:
        return await self._must(
            "call:set-transcription", {"callId": self.call_id, "enabled": enabled}
        )

    async def set_language(
        self, language: str | None = None, caption_language: str | None = None
    ) -> Payload:
        data = {"callId": self.call_id, **self._languages(language, caption_language)}
        return await self._must("call:set-language", data)

    async def transcribe(
        self,
        utterance_id: str,
        text: str,
        *,
        is_final: bool = True,
        revision: int | None = None,
        language: str | None = None,
    ) -> Payload:
        """Send what this browser's own speech recognition heard (P2P)."""
        data: Payload = {
            "callId": self.call_id,
            "utteranceId": utterance_id,
            "text": text,
            "isFinal": is_final,
        }
        if revision is not None:
            data["revision"] = revision
        if language is not None:
            data["language"] = language
        return await self._must("call:transcription", data)

    async def captions_uplink(self, timeout: float = 30.0) -> Payload:
        """Ask for an audio-only uplink for the server's transcribers and publish this
        client's microphone on it (P2P; the video stays on the direct links)."""
        ack = await self._must_within("call:captions-uplink", {"callId": self.call_id}, timeout)
        if ack.get("sfu"):
            await self._open_captions_uplink(ack["sfu"]["sessionId"])
        return ack

    async def drop_captions_uplink(self) -> Payload:
        ack = await self._must("call:captions-uplink", {"callId": self.call_id, "enabled": False})
        await self._close_captions_uplink()
        return ack

    def captions(self, language: str | None = None) -> list[Payload]:
        """Every ``call:caption`` received (in one language, or all)."""
        return [c for c in self.seen("call:caption") if language in (None, c.get("language"))]

    async def wait_caption(
        self, predicate: Callable[[Payload], bool], timeout: float = 30.0
    ) -> Payload:
        """The first ``call:caption`` received so far or later that matches."""
        found: list[Payload] = []

        def match() -> bool:
            found[:] = [c for c in self.captions() if predicate(c)][:1]
            return bool(found)

        try:
            await until(match, self._changed, timeout)
        except TimeoutError:
            got = [
                (c.get("language"), c.get("sourceText"), c.get("text"), c.get("isFinal"))
                for c in self.captions()
            ]
            raise AssertionError(f"{self.name}: no matching caption; got {got[-10:]}") from None
        return found[0]

    async def _must_within(self, event: str, data: Any, timeout: float) -> Payload:
        ack = await self.request(event, data, timeout=timeout)
        if not ack.get("ok"):
            raise AssertionError(f"{self.name}: {event} refused: {ack.get('error')}")
        return ack

    async def _open_captions_uplink(self, session_id: str) -> None:
        await self._in_call()
        if self.captions_sfu is not None and self.captions_sfu.session_id == session_id:
            return
        await self._close_captions_uplink()
        assert self.call_id is not None and self.participant_id is not None
        transport = SocketSfuTransport(
            self.sio, self.call_id, self.participant_id, purpose="captions"
        )
        client = GatewaySfuClient(transport, session_id, purpose="captions", speaking=True)
        if self.microphone is not None:
            client.audio_track = cast(SyntheticAudioTrack, self.microphone.track())
        self.captions_sfu = client
        await client.join()

    async def _close_captions_uplink(self) -> None:
        client, self.captions_sfu = self.captions_sfu, None
        if client is not None:
            await client.close()

    async def _follow_captions_uplink(self, payload: Payload) -> None:
        """``call:captions-uplink``: the gateway opened (or moved, or dropped) the uplink."""
        sfu = payload.get("sfu")
        try:
            if sfu:
                await self._open_captions_uplink(sfu["sessionId"])
            else:
                await self._close_captions_uplink()
        except Exception as exc:
            self.events.append(("client:error", {"error": repr(exc)}, time.monotonic()))
            self._changed.set()

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
        self.p2p_links_made += 1
        pc.addTrack(self.microphone.track() if self.microphone else AudioStreamTrack())
        pc.addTrack(PatternVideoTrack(self.colour))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            transceiver = next((t for t in pc.getTransceivers() if t.receiver.track is track), None)
            if transceiver is not None:
                self._cuttable(link, transceiver.receiver)
            link.tasks.append(asyncio.get_running_loop().create_task(self._count(link, track)))

        self.links[remote_id] = link
        return link

    def _cuttable(self, link: PeerLink, receiver: Any) -> None:
        handle = receiver._handle_rtp_packet

        async def maybe_drop(packet: Any, arrival_time_ms: int) -> None:
            if not link.cut:
                await handle(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = maybe_drop

    async def _count(self, link: PeerLink, track: MediaStreamTrack) -> None:
        kind = track.kind
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                await track.recv()
                now = time.monotonic()
                link.frames[kind] = link.frames.get(kind, 0) + 1
                link.first_frame_at.setdefault(kind, now)
                link.last_frame_at[kind] = now
                self.arrivals.append((now, link.remote_id, kind, "p2p"))
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
            await self._in_call()  # an offer can overtake the ack of our own accept
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

    async def wait_everyone(self, since: float, path: str, timeout: float = 30.0) -> None:
        """Until media of both kinds from every other participant arrived over ``path``."""
        try:
            await until(lambda: self.receives_everyone(since, path), self._media_changed, timeout)
        except TimeoutError:
            got = sorted({(w, k) for t, w, k, p in self.arrivals if p == path and t >= since})
            raise AssertionError(
                f"{self.name}: not everyone over {path} (others={sorted(self.others)}, got={got})"
            ) from None

    def cut_p2p(self) -> None:
        """Tests: this client's direct paths stop carrying media (packets dropped)."""
        for link in self.links.values():
            link.cut = True

    # --- following the call's mode -----------------------------------------------------
    def _sfu_client(self, session_id: str, *, prewarm: bool) -> GatewaySfuClient:
        assert self.call_id is not None and self.participant_id is not None
        self._sfu_transport = SocketSfuTransport(self.sio, self.call_id, self.participant_id)
        client = GatewaySfuClient(
            self._sfu_transport,
            session_id,
            colour=self.colour,
            speaking=True,
            prewarm=prewarm,
            fps=15.0,
        )
        if self.microphone is not None:
            client.audio_track = cast(SyntheticAudioTrack, self.microphone.track())

        def arrived() -> None:
            t, who, kind = client.arrivals[-1]
            self.arrivals.append((t, who, kind, "sfu"))
            self._media_changed.set()

        client.on_media = arrived
        return client

    async def _close_sfu(self) -> None:
        client, self.sfu = self.sfu, None
        self.sfu_live = False
        if client is not None:
            await client.close()

    async def _in_call(self) -> None:
        """Until the ack of the join that bound this socket was handled (a switch can be
        pushed right after the binding, before the ack reaches the client)."""
        await until(
            lambda: self.call_id is not None and self.participant_id is not None,
            self._changed,
            10,
        )

    async def _prewarm(self, payload: Payload) -> None:
        await self._in_call()
        sfu = payload.get("sfu") or {}
        if self.sfu is not None and self.sfu.session_id == sfu.get("sessionId"):
            return
        await self._close_sfu()
        client = self._sfu_client(sfu["sessionId"], prewarm=True)
        self.sfu = client
        try:
            await client.join()
        except Exception as exc:
            self.events.append(("client:error", {"error": repr(exc)}, time.monotonic()))

    def receives_everyone(self, since: float, path: str) -> bool:
        """Media of both kinds from every other participant arrived over ``path``."""
        got = {(who, kind) for t, who, kind, p in self.arrivals if p == path and t >= since}
        return all((who, kind) in got for who in self.others for kind in ("audio", "video"))

    async def _switch(self, payload: Payload) -> None:
        epoch, mode, kind = payload["epoch"], payload["mode"], payload["kind"]
        started = time.monotonic()
        ok, reason = True, ""
        try:
            await self._in_call()
            if mode == "sfu":
                self.sfu_live = True
                sfu = payload["sfu"]
                if self.sfu is not None and self.sfu.session_id == sfu["sessionId"]:
                    await self.sfu.start_sending()  # pre-warmed: only start sending
                else:
                    await self._close_sfu()
                    self.sfu = self._sfu_client(sfu["sessionId"], prewarm=False)
                    await self.sfu.join()
            else:
                p2p = payload.get("p2p") or {}
                if p2p.get("offerTo"):
                    peer = p2p["offerTo"]
                    if peer in self.links:
                        await self._close_link(self.links.pop(peer))
                    await self.offer_to(peer)
            if kind == "attach":
                self.mode, self.epoch = mode, max(self.epoch, epoch)
                return
            deadline = payload.get("deadlineS") or 10.0
            await until(
                lambda: self.receives_everyone(started, mode), self._media_changed, deadline
            )
        except TimeoutError:
            ok, reason = False, "timeout"
        except Exception as exc:
            ok, reason = False, type(exc).__name__[:60]
        took = time.monotonic() - started
        self.reports.append((epoch, mode, took, ok))
        gap = self.max_gap_ms(started - 1.0, time.monotonic())
        with contextlib.suppress(Exception):
            await self.request(
                "call:mode-switched",
                {
                    "callId": self.call_id,
                    "epoch": epoch,
                    "mode": mode,
                    "ok": ok,
                    "reason": reason,
                    "maxGapMs": round(gap, 1),
                },
            )

    async def wait_mode(self, mode: str, timeout: float = 30.0) -> None:
        """Until a completed migration put this client on ``mode`` with the old path gone."""

        def settled() -> bool:
            # Back on P2P a pre-warmed SFU session may stay, idle.
            old_gone = not self.links if mode == "sfu" else not self.sfu_live
            return self.mode == mode and old_gone

        try:
            await until(settled, self._changed, timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: not on {mode} (mode={self.mode}, links={sorted(self.links)}, "
                f"sfu={self.sfu is not None}; saw {[n for n, _, _ in self.events][-12:]})"
            ) from None

    async def _mode_changed(self, payload: Payload) -> None:
        self.epoch = max(self.epoch, payload.get("epoch", 0))
        if payload.get("outcome") == "completed":
            if payload["toMode"] == "sfu":
                for link in list(self.links.values()):
                    await self._close_link(link)
                self.links.clear()
            else:
                await self._close_sfu()
            self.mode = payload["toMode"]
            self._changed.set()
            return
        # The migration did not happen: drop the new path, keep (and complete) the old.
        if payload.get("toMode") == "sfu":
            await self._close_sfu()
            self._changed.set()
            if self.mode == "p2p":
                for other in sorted(self.others):
                    if (
                        other not in self.links
                        and self.participant_id
                        and self.participant_id < other
                    ):
                        await self.offer_to(other)
        elif payload.get("toMode") == "p2p" and self.mode == "sfu":
            for link in list(self.links.values()):
                await self._close_link(link)
            self.links.clear()

    async def _watch_health(self) -> None:
        """Report a direct path that never carried media, or stopped (a browser's job)."""
        while True:
            await asyncio.sleep(0.25)
            if self.mode != "p2p" or self.call_id is None:
                continue
            now = time.monotonic()
            for link in list(self.links.values()):
                if link.reported:
                    continue
                last = link.last_frame_at.get("video")
                reason = ""
                if link.pc.iceConnectionState == "failed":
                    reason = "ice_failed"
                elif last is None and now - link.created_at > self.setup_deadline_s:
                    reason = "no_media"
                elif last is not None and now - last > self.stall_s:
                    reason = "frames_stalled"
                if reason:
                    link.reported = True
                    with contextlib.suppress(Exception):
                        await self.request(
                            "call:media-health",
                            {
                                "callId": self.call_id,
                                "state": "failed",
                                "peerId": link.remote_id,
                                "reason": reason,
                            },
                        )

    def max_gap_ms(self, since: float, until_t: float, kind: str = "video") -> float:
        """The longest gap in ``kind`` media from any other participant, over any path."""
        worst = 0.0
        for who in self.others:
            times = sorted(t for t, w, k, _ in self.arrivals if w == who and k == kind)
            inside = [t for t in times if since <= t <= until_t]
            if not inside:
                continue
            before = [t for t in times if t < since]
            points = ([before[-1]] if before else []) + inside
            worst = max([worst] + [(b - a) * 1000 for a, b in itertools.pairwise(points)])
        return worst

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
