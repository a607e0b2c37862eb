"""Captions over Socket.IO: transcription on/off, languages, browser transcripts, uplinks.

Client events (each acknowledged; see ``docs/socket-protocol.md``, "Captions"):

- ``call:set-transcription {callId, enabled}`` -> ``{enabled}``; everyone in the call is
  told ``call:transcription-changed {enabled, by}``;
- ``call:set-language {callId, language?, captionLanguage?}`` -> ``{language,
  captionLanguage}``; everyone is told ``call:participant-language``; the next caption
  already follows it;
- ``call:transcription {callId, utteranceId, text, isFinal, revision?, language?}`` -> ``{
  utteranceId, revision, published}``: the browser's own speech recognition (P2P), published
  as a ``transcript.segment`` (:mod:`gateway.captions.transcripts`);
- ``call:captions-uplink {callId, enabled?}`` -> ``{sfu: {nodeId, sessionId} | null}``: an
  audio-only uplink to a media node for a browser that cannot transcribe (P2P); then
  ``call:sfu-publish {callId, sdp, purpose: "captions"}`` with the microphone.

Refusals: ``bad_request`` (an unknown language code, text over 2,000 characters, a bad
utterance id), ``not_in_call``, ``call_ended``, ``conflict`` (transcription is off; the
media node transcribes this participant already, so its browser must not), ``unavailable``
(no media node took the uplink in time: the wish stays recorded, and a later
``call:captions-uplink`` event brings the session), ``rate_limited``.
"""

import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import state_machine as sm
from gateway.calls import CallService
from gateway.captions.router import CaptionRouter
from gateway.captions.transcripts import ClientRevisions, client_segment, scoped_utterance_id
from gateway.delivery import SocketSession
from gateway.errors import CallError
from gateway.media.plan import server_transcribes
from gateway.media.sessions import MediaSessions
from gateway.settings import GatewaySettings
from gateway.sockets.requests import (
    Ack,
    CaptionsUplinkRequest,
    Handlers,
    SetLanguageRequest,
    SetTranscriptionRequest,
    TranscriptionRequest,
    decode,
    ok,
    require_bound,
)
from gateway.state_machine import Outcome
from gateway.tokens import Principal
from gateway.validation import check_spoken_language
from schemas.call_state import CallParticipantState, CallState
from schemas.captions import TranscriptSegment
from schemas.logs import get_logger

log = get_logger("gateway.sockets.captions")

PublishSegment = Callable[[TranscriptSegment], Awaitable[None]]


class CaptionSignaling:
    """The captions events of the socket protocol (see the module docstring)."""

    def __init__(
        self,
        settings: GatewaySettings,
        calls: CallService,
        sessions: MediaSessions,
        router: CaptionRouter,
        publish: PublishSegment,
    ) -> None:
        self.settings = settings
        self.calls = calls
        self.sessions = sessions
        self.router = router
        self._publish = publish
        self.revisions = ClientRevisions()
        self.transcripts_published = 0
        self.transcripts_stale = 0

    def handlers(self) -> Handlers:
        return {
            "call:set-transcription": self.set_transcription,
            "call:set-language": self.set_language,
            "call:transcription": self.transcription,
        }

    def waiting_handlers(self) -> Handlers:
        """Events that wait for other services (placement, a media node): registered
        unordered, so a socket's signals and heartbeats never wait behind them."""
        return {"call:captions-uplink": self.captions_uplink}

    def _noted(self, outcome: Outcome | None) -> None:
        if outcome is not None:
            self.router.note(outcome.state)

    async def _live(
        self, call_id: str, participant_id: str
    ) -> tuple[CallState, CallParticipantState]:
        """The call's state with this participant in it (the mirror, then KV if it lags)."""
        for fresh in (False, True):
            state = await self.calls.current(call_id, fresh=fresh)
            if state.status == "ended":
                raise CallError("call_ended", "the call has ended")
            me = sm.find_participant(state, participant_id)
            if me is not None:
                return state, me
        raise CallError("not_in_call", "you are not in this call")

    # --- state ---------------------------------------------------------------------------
    async def set_transcription(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, SetTranscriptionRequest)
        pid = require_bound(session, req.call_id)
        self._noted(await self.calls.set_transcription(req.call_id, pid, req.enabled))
        return ok(enabled=req.enabled)

    async def set_language(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, SetLanguageRequest)
        pid = require_bound(session, req.call_id)
        languages = req.languages()
        if languages == sm.NO_LANGUAGES:
            raise CallError("bad_request", "give language, captionLanguage or both")
        outcome = await self.calls.set_language(req.call_id, pid, languages)
        self._noted(outcome)
        state = outcome.state if outcome is not None else await self.calls.current(req.call_id)
        me = sm.find_participant(state, pid)
        if me is None:
            raise CallError("not_in_call", "you are not in this call")
        return ok(language=me.language, captionLanguage=me.caption_language or me.language)

    # --- P2P: the browser's own transcript -------------------------------------------------
    async def transcription(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, TranscriptionRequest)
        pid = require_bound(session, req.call_id)
        state, me = await self._live(req.call_id, pid)
        if not state.transcription:
            raise CallError("conflict", "transcription is off in this call")
        if server_transcribes(state, pid):
            raise CallError(
                "conflict", "a media node transcribes your audio now; send no transcript"
            )
        language = check_spoken_language(req.language) if req.language else me.language
        now = time.time()
        turn = self.revisions.next(
            req.call_id, pid, req.utterance_id, req.revision, max(0.0, now - me.joined_at)
        )
        utterance_id = scoped_utterance_id(pid, req.utterance_id)
        if turn is None:
            self.transcripts_stale += 1
            return ok(utteranceId=utterance_id, revision=req.revision, published=False)
        revision, started_s = turn
        segment = client_segment(
            call_id=req.call_id,
            speaker=me,
            utterance_id=req.utterance_id,
            text=" ".join(req.text.split()),
            is_final=req.is_final,
            revision=revision,
            language=language,
            started_s=started_s,
            now=now,
        )
        try:
            await self._publish(segment)
        except Exception as exc:
            log.warning(
                "captions.transcript_publish_failed",
                call_id=req.call_id,
                participant_id=pid,
                error=type(exc).__name__,
            )
            raise CallError("unavailable", "the transcript could not be passed on; retry") from None
        self.revisions.published(req.call_id, pid, req.utterance_id, revision, started_s)
        self.transcripts_published += 1
        return ok(utteranceId=utterance_id, revision=revision, published=True)

    # --- P2P: an audio-only uplink for the server's transcribers ----------------------------
    async def captions_uplink(self, session: SocketSession, who: Principal, data: Any) -> Ack:
        req = decode(data, CaptionsUplinkRequest)
        pid = require_bound(session, req.call_id)
        outcome = await self.calls.set_captions_uplink(req.call_id, pid, req.enabled)
        self._noted(outcome)
        if not req.enabled:
            return ok(sfu=None)
        state = outcome.state if outcome is not None else await self.calls.current(req.call_id)
        if state.mode == "sfu":
            # Its call session is transcribed; the wish stays for a return to P2P.
            return ok(sfu=None, reason="sfu")
        ref = await self.sessions.wait_for(
            req.call_id, pid, "captions", self.settings.captions_uplink_timeout_s
        )
        if ref is None:
            raise CallError(
                "unavailable",
                "no media node took the captions uplink yet; call:captions-uplink will follow",
            )
        return ok(sfu={"nodeId": ref.node_id, "sessionId": ref.session_id})
