"""Keeps each local participant's media in step with its call's mode (reconciliation).

Whatever prompts it — a call event, a ``call.cmd`` command, a socket bound or resumed —
the coordinator re-reads the call's state and, for every participant whose socket this
gateway holds, makes what it has match :func:`gateway.media.plan.plan`: it opens (or
closes) the participant's session on the media node, then tells the client
``call:mode-switch`` (once per epoch) or ``call:sfu-prewarm``. It also closes the sessions
of participants who left. Commands are only "look now": the state is the truth, so a lost
or repeated command, or an event seen twice, changes nothing.

A node that will not open a session during a migration to the SFU is reported as that
participant's failure (``participant.media_path`` failed, ``node_refused``): the selector
then ends the migration and the call stays on its old path.

Captions: each session is told (``set_transcription``, never a reopen: no media gap)
whether to tap its microphone and in which language, as the plan says: transcription
turned on or off, a language changed, a migration completed. A participant who asked for a
captions uplink gets its audio-only ``captions`` session on the node the selector placed
the call's uplinks on, and is told ``call:captions-uplink`` (once per session; ``sfu:
null`` when it is no longer wanted). A node refusing one is tried again a little later.
"""

import asyncio
import time
from typing import Any

from gateway import state_machine as sm
from gateway.call_store import CallStore
from gateway.calls import CallService
from gateway.delivery import Delivery, SocketSession
from gateway.errors import CallError
from gateway.ice import ice_servers
from gateway.lanes import Lanes
from gateway.media.plan import MediaPlan, SessionWanted, SwitchWanted, plan
from gateway.media.sessions import MediaSessions, NodeRefused, SessionRef
from gateway.settings import GatewaySettings
from schemas.bus import Incoming
from schemas.call_commands import AnyCallCommand
from schemas.call_events import (
    AnyCallEvent,
    CallEnded,
    CallModeChanged,
    CaptionsNodeChanged,
    CaptionsUplinkChanged,
    MigrationStarted,
    ParticipantJoined,
    ParticipantLanguageChanged,
    ParticipantLeft,
    ParticipantMediaPath,
    ParticipantResumed,
    TranscriptionChanged,
)
from schemas.call_state import CallState
from schemas.logs import get_logger

log = get_logger("gateway.media.coordinator")

#: Events after which a participant's media may have to change.
_RELEVANT = (
    ParticipantJoined,
    ParticipantLeft,
    ParticipantResumed,
    MigrationStarted,
    CallModeChanged,
    ParticipantMediaPath,
    TranscriptionChanged,
    ParticipantLanguageChanged,
    CaptionsUplinkChanged,
    CaptionsNodeChanged,
    CallEnded,
)

#: A node that refused a captions session is asked again after this long.
_CAPTIONS_RETRY_S = 2.0


class MediaCoordinator:
    """Reconciles the media of this gateway's participants, one call at a time."""

    def __init__(
        self,
        settings: GatewaySettings,
        calls: CallService,
        store: CallStore,
        delivery: Delivery,
        sessions: MediaSessions,
    ) -> None:
        self._settings = settings
        self._calls = calls
        self._store = store
        self._delivery = delivery
        self._sessions = sessions
        self.lanes = Lanes(self._reconcile, limit=256)
        self._spawned: set[asyncio.Task[None]] = set()
        self.switches_told = 0
        self.refusals = 0

    # --- triggers ----------------------------------------------------------------------------
    def request(self, call_id: str) -> None:
        """Reconcile ``call_id`` soon (coalesced with any reconcile already under way)."""
        task = asyncio.get_running_loop().create_task(self._quietly(call_id))
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def _quietly(self, call_id: str) -> None:
        try:
            await self.lanes.request(call_id)
        except Exception as exc:
            log.exception("media.reconcile_failed", call_id=call_id, error=type(exc).__name__)

    async def on_event(self, event: AnyCallEvent) -> None:
        """:class:`gateway.event_feed.EventFeed` handler."""
        if isinstance(event, _RELEVANT) and self._serves(event.call_id):
            self.request(event.call_id)

    async def on_command(self, command: AnyCallCommand, _: Incoming) -> None:
        """A ``call.cmd.<call>.*`` command for a call this gateway serves."""
        self.request(command.call_id)

    def on_bind(self, session: SocketSession) -> None:
        if session.call_id is not None:
            self.request(session.call_id)

    def _serves(self, call_id: str) -> bool:
        return bool(self._delivery.sessions_in(call_id) or self._sessions.of_call(call_id))

    async def settled(self) -> None:
        while self._spawned:
            await asyncio.gather(*list(self._spawned), return_exceptions=True)

    # --- reconciling -------------------------------------------------------------------------
    async def _reconcile(self, call_id: str) -> None:
        entry = await self._store.get(call_id)
        state = entry.value if entry is not None else None
        for ref in self._sessions.of_call(call_id):
            wanted = _wanted(plan(state, ref.participant_id), ref) if state is not None else None
            if wanted is None or wanted.node_id != ref.node_id:
                await self._sessions.close(ref)
        if state is None:
            return
        for socket in self._delivery.sessions_in(call_id):
            if socket.participant_id is not None:
                await self._apply(state, socket, socket.participant_id)

    async def _apply(self, state: CallState, socket: SocketSession, participant_id: str) -> None:
        wanted = plan(state, participant_id)
        me = sm.find_participant(state, participant_id)
        language = me.language if me is not None else "en"
        await self._apply_captions(state, socket, participant_id, wanted.captions, language)
        ref: SessionRef | None = None
        if wanted.session is not None:
            try:
                ref = await self._sessions.ensure(
                    state.call_id,
                    participant_id,
                    wanted.session.node_id,
                    transcription=wanted.session.transcription,
                    language=language,
                )
            except NodeRefused as refused:
                self.refusals += 1
                log.warning(
                    "media.session_refused",
                    call_id=state.call_id,
                    participant_id=participant_id,
                    node_id=wanted.session.node_id,
                    reason=refused.reason,
                )
                if wanted.switch is not None and wanted.switch.kind == "migration":
                    await self._calls.report_media(
                        state.call_id,
                        participant_id,
                        epoch=wanted.switch.epoch,
                        mode=wanted.switch.mode,
                        ok=False,
                        reason="node_refused",
                    )
                return
            ref = await self._configured(ref, wanted.session.transcription, language)
        if wanted.switch is not None:
            told = (wanted.switch.epoch, wanted.switch.mode, ref.session_id if ref else None)
            if socket.told_switch != told:
                socket.told_switch = told
                self.switches_told += 1
                await self._delivery.emit_to_participant(
                    state.call_id,
                    participant_id,
                    "call:mode-switch",
                    self._switch_payload(state, wanted.switch, ref, socket),
                )
        if wanted.prewarm and ref is not None and socket.told_prewarm != ref.session_id:
            socket.told_prewarm = ref.session_id
            await self._delivery.emit_to_participant(
                state.call_id,
                participant_id,
                "call:sfu-prewarm",
                {
                    "callId": state.call_id,
                    "participantId": participant_id,
                    "epoch": state.epoch,
                    "sfu": _sfu(ref),
                    **self._ice(socket),
                },
            )

    async def _apply_captions(
        self,
        state: CallState,
        socket: SocketSession,
        participant_id: str,
        wanted: SessionWanted | None,
        language: str,
    ) -> None:
        """The participant's audio-only captions session, and what its client was told."""
        call_id = state.call_id
        if wanted is None:
            if socket.told_captions is not None:
                socket.told_captions = None
                await self._delivery.emit_to_participant(
                    call_id,
                    participant_id,
                    "call:captions-uplink",
                    {"callId": call_id, "participantId": participant_id, "sfu": None},
                )
            return
        try:
            ref = await self._sessions.ensure(
                call_id,
                participant_id,
                wanted.node_id,
                purpose="captions",
                transcription=True,
                language=language,
            )
        except NodeRefused as refused:
            self.refusals += 1
            log.warning(
                "media.captions_session_refused",
                call_id=call_id,
                participant_id=participant_id,
                node_id=wanted.node_id,
                reason=refused.reason,
            )
            asyncio.get_running_loop().call_later(_CAPTIONS_RETRY_S, self.request, call_id)
            return
        ref = await self._configured(ref, True, language)
        if socket.told_captions != ref.session_id:
            socket.told_captions = ref.session_id
            await self._delivery.emit_to_participant(
                call_id,
                participant_id,
                "call:captions-uplink",
                {
                    "callId": call_id,
                    "participantId": participant_id,
                    "sfu": {"nodeId": ref.node_id, "sessionId": ref.session_id},
                    **self._ice(socket),
                },
            )

    async def _configured(self, ref: SessionRef, transcription: bool, language: str) -> SessionRef:
        """``ref`` with its node told to tap (or not) in ``language``, if it was not yet."""
        if ref.transcription == transcription and ref.language == language:
            return ref
        try:
            return await self._sessions.configure(
                ref, transcription=transcription, language=language
            )
        except CallError as err:
            log.warning(
                "media.set_transcription_failed",
                call_id=ref.call_id,
                participant_id=ref.participant_id,
                node_id=ref.node_id,
                code=err.code,
            )
            # Still wanted: try again shortly (a gone session is reopened by then).
            asyncio.get_running_loop().call_later(_CAPTIONS_RETRY_S, self.request, ref.call_id)
            return ref

    def _switch_payload(
        self,
        state: CallState,
        switch: SwitchWanted,
        ref: SessionRef | None,
        socket: SocketSession,
    ) -> dict[str, Any]:
        m = state.migration
        payload: dict[str, Any] = {
            "callId": state.call_id,
            "participantId": socket.participant_id,
            "epoch": switch.epoch,
            "mode": switch.mode,
            "kind": switch.kind,
            "reason": m.reason if m is not None else None,
            "prewarmed": bool(m and m.prewarmed),
            "deadlineS": (
                round(max(0.0, switch.deadline_at - time.time()), 3)
                if switch.deadline_at is not None
                else None
            ),
            "sfu": _sfu(ref) if switch.mode == "sfu" and ref is not None else None,
            "p2p": (
                {"offerTo": switch.offer_to, "peerId": switch.peer_id}
                if switch.mode == "p2p"
                else None
            ),
            **self._ice(socket),
        }
        return payload

    def _ice(self, socket: SocketSession) -> dict[str, Any]:
        return ice_servers(self._settings, socket.principal_id)


def _wanted(media: MediaPlan, ref: SessionRef) -> SessionWanted | None:
    """What the plan wants for a session of ``ref``'s purpose."""
    return media.session if ref.purpose == "call" else media.captions


def _sfu(ref: SessionRef) -> dict[str, Any]:
    return {
        "nodeId": ref.node_id,
        "sessionId": ref.session_id,
        "videoSlots": ref.video_slots,
        "audioSlots": ref.audio_slots,
    }
