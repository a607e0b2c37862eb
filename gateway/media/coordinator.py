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
"""

import asyncio
import time
from typing import Any

from gateway import state_machine as sm
from gateway.call_store import CallStore
from gateway.calls import CallService
from gateway.delivery import Delivery, SocketSession
from gateway.ice import ice_servers
from gateway.lanes import Lanes
from gateway.media.plan import SwitchWanted, plan
from gateway.media.sessions import MediaSessions, NodeRefused, SessionRef
from gateway.settings import GatewaySettings
from schemas.bus import Incoming
from schemas.call_commands import AnyCallCommand
from schemas.call_events import (
    AnyCallEvent,
    CallEnded,
    CallModeChanged,
    MigrationStarted,
    ParticipantJoined,
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
    CallEnded,
)


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
            wanted = plan(state, ref.participant_id).session if state is not None else None
            if ref.purpose == "call" and (wanted is None or wanted.node_id != ref.node_id):
                await self._sessions.close(ref)
        if state is None:
            return
        for socket in self._delivery.sessions_in(call_id):
            if socket.participant_id is not None:
                await self._apply(state, socket, socket.participant_id)

    async def _apply(self, state: CallState, socket: SocketSession, participant_id: str) -> None:
        wanted = plan(state, participant_id)
        ref: SessionRef | None = None
        if wanted.session is not None:
            me = sm.find_participant(state, participant_id)
            try:
                ref = await self._sessions.ensure(
                    state.call_id,
                    participant_id,
                    wanted.session.node_id,
                    transcription=state.transcription,
                    language=me.language if me is not None else "en",
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
        # Sent with a mode switch: credentials of this participant in this call only.
        if socket.call_id is None or socket.participant_id is None:
            return ice_servers(self._settings, call_id="none", participant_id="none")
        return ice_servers(
            self._settings, call_id=socket.call_id, participant_id=socket.participant_id
        )


def _sfu(ref: SessionRef) -> dict[str, Any]:
    return {
        "nodeId": ref.node_id,
        "sessionId": ref.session_id,
        "videoSlots": ref.video_slots,
        "audioSlots": ref.audio_slots,
    }
