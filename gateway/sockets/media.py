"""SFU sessions and migrations over Socket.IO.

Client events (each acknowledged):

- ``call:sfu-publish {callId, sdp, purpose?}``: the client's uplink offer -> ``{sdp,
  sessionId}`` (the node's answer); ``purpose: "captions"``: the microphone only, on the
  participant's audio-only captions uplink (:mod:`gateway.sockets.captions`);
- ``call:sfu-downlink {callId}`` -> ``{sdp, sessionId, version, slots}`` (the node's offer
  of the participant's slots; answer it with ``call:sfu-downlink-answer {callId, sdp}``);
- ``call:sfu-preferences {callId, pinned, tiles}``: who to keep on screen (last-N);
- ``call:mode-switched {callId, epoch, mode, ok, reason?, maxGapMs?}``: the new path of
  migration ``epoch`` carries the others' media (or failed);
- ``call:media-health {callId, state: "failed", peerId?, reason?}``: the direct path
  failed: the call moves to the SFU and stays there.

The session is the one the gateway opened for this participant when it said
``call:mode-switch`` or ``call:sfu-prewarm``; without one these events are refused with
``conflict`` (wait for the switch).
"""

from typing import Any

from gateway.calls import CallService
from gateway.delivery import SocketSession
from gateway.errors import CallError
from gateway.media.node_events import slot_view
from gateway.media.sessions import MediaSessions, SessionRef
from gateway.settings import GatewaySettings
from gateway.sockets.requests import (
    Ack,
    Handlers,
    MediaHealth,
    ModeSwitched,
    SfuPreferences,
    SfuRef,
    SfuSdpRequest,
    decode,
    ok,
    require_bound,
)
from gateway.tokens import Principal
from gateway.validation import check_sdp
from schemas.media import (
    AnswerDownlink,
    DownlinkOffer,
    MediaAck,
    OpenDownlink,
    Publish,
    SdpAnswer,
    SessionPurpose,
    SetPreferences,
)


class MediaSignaling:
    """The SFU and migration events of the socket protocol."""

    def __init__(
        self, settings: GatewaySettings, calls: CallService, sessions: MediaSessions
    ) -> None:
        self.settings = settings
        self.calls = calls
        self.sessions = sessions

    def handlers(self) -> Handlers:
        return {
            "call:sfu-preferences": self.preferences,
            "call:mode-switched": self.mode_switched,
            "call:media-health": self.media_health,
        }

    def negotiation_handlers(self) -> Handlers:
        """The SDP exchanges: a client negotiates its uplink and downlink at once (the
        node orders what concerns one leg; the socket need not wait for the other leg)."""
        return {
            "call:sfu-publish": self.publish,
            "call:sfu-downlink": self.downlink,
            "call:sfu-downlink-answer": self.downlink_answer,
        }

    def _ref(
        self, session: SocketSession, call_id: str, purpose: SessionPurpose = "call"
    ) -> SessionRef:
        pid = require_bound(session, call_id)
        ref = self.sessions.get(call_id, pid, purpose)
        if ref is None:
            if purpose == "captions":
                raise CallError(
                    "conflict", "no captions uplink for you yet; ask with call:captions-uplink"
                )
            raise CallError("conflict", "no media session for you yet; wait for call:mode-switch")
        return ref

    async def publish(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, SfuSdpRequest)
        ref = self._ref(session, req.call_id, req.purpose)
        sdp = check_sdp(req.sdp, self.settings.max_sdp_bytes)
        answer = await self.sessions.request(
            ref, Publish(session_id=ref.session_id, sdp=sdp), SdpAnswer
        )
        return ok(sdp=answer.sdp, sessionId=ref.session_id, audio=answer.audio, video=answer.video)

    async def downlink(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, SfuRef)
        ref = self._ref(session, req.call_id)
        offer = await self.sessions.request(
            ref, OpenDownlink(session_id=ref.session_id), DownlinkOffer
        )
        return ok(
            sdp=offer.sdp,
            sessionId=ref.session_id,
            version=offer.version,
            slots=[slot_view(s) for s in offer.slots],
        )

    async def downlink_answer(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, SfuSdpRequest)
        ref = self._ref(session, req.call_id)
        sdp = check_sdp(req.sdp, self.settings.max_sdp_bytes)
        answer = AnswerDownlink(session_id=ref.session_id, sdp=sdp)
        await self.sessions.request(ref, answer, MediaAck)
        return ok(sessionId=ref.session_id)

    async def preferences(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, SfuPreferences)
        ref = self._ref(session, req.call_id)
        await self.sessions.request(
            ref,
            SetPreferences(session_id=ref.session_id, pinned=req.pinned, video_tiles=req.tiles),
            MediaAck,
        )
        return ok(sessionId=ref.session_id)

    async def mode_switched(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, ModeSwitched)
        pid = require_bound(session, req.call_id)
        outcome = await self.calls.report_media(
            req.call_id,
            pid,
            epoch=req.epoch,
            mode=req.mode,
            ok=req.ok,
            reason=req.reason,
            max_gap_ms=req.max_gap_ms,
        )
        state = outcome.state if outcome is not None else await self.calls.current(req.call_id)
        return ok(recorded=outcome is not None, mode=state.mode, epoch=state.epoch)

    async def media_health(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, MediaHealth)
        pid = require_bound(session, req.call_id)
        state = await self.calls.current(req.call_id, fresh=True)
        outcome = await self.calls.report_media(
            req.call_id,
            pid,
            epoch=state.epoch,
            mode="p2p",
            ok=False,
            reason=req.reason or "p2p_failed",
            peer_id=req.peer_id,
        )
        return ok(recorded=outcome is not None)
