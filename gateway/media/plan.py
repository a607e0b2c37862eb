"""What media a participant should have, from the call's state alone (pure).

Level-triggered: whatever event, command or reconnect prompted a look, the answer depends
only on the state, so a missed command or a duplicate event changes nothing.

- migrating to the SFU (epoch e, node N): an active session on N; ``call:mode-switch``
  sfu at e until the client reports ready;
- migrating to P2P (epoch e): the SFU session stays (it is the old path);
  ``call:mode-switch`` p2p at e, one of the two told to offer;
- on the SFU (node N): an active session on N; ``call:mode-switch`` sfu at the call's
  epoch (someone joining a call already on the SFU);
- P2P with a pre-warm node N: an idle session on N; ``call:sfu-prewarm``;
- P2P: nothing.

Captions, on top (see :mod:`gateway.captions`): a ``call`` session taps its participant's
microphone for transcription while the call is on the SFU (mode ``sfu``, also while it
migrates back to P2P) and transcription is on; never while the call only migrates *to* the
SFU or is pre-warmed (the browser, or a captions uplink, still carries the captions then:
one participant is never transcribed twice). In P2P, a participant who asked for a
captions uplink has a ``captions`` session (audio only, transcribed) on the node the
selector placed the call's uplinks on, while transcription is on.
"""

from dataclasses import dataclass, replace
from typing import Literal

from schemas.call_events import CallMode
from schemas.call_state import CallState


@dataclass(frozen=True, slots=True)
class SessionWanted:
    """A session on ``node_id``; ``idle``: connected but sending nothing (pre-warm);
    ``transcription``: its microphone feeds the transcribers."""

    node_id: str
    idle: bool
    transcription: bool = False


@dataclass(frozen=True, slots=True)
class SwitchWanted:
    """A ``call:mode-switch`` the client must act on."""

    epoch: int
    mode: CallMode
    #: Part of a migration (the client reports ``call:mode-switched`` when its new path
    #: carries media) or joining a call already on the SFU (``attach``).
    kind: Literal["migration", "attach"]
    node_id: str | None = None
    #: Back to P2P: the participant to send the offer to (only for the one who offers).
    offer_to: str | None = None
    #: Back to P2P: the other participant.
    peer_id: str | None = None
    deadline_at: float | None = None


@dataclass(frozen=True, slots=True)
class MediaPlan:
    session: SessionWanted | None = None
    switch: SwitchWanted | None = None
    prewarm: bool = False
    #: An audio-only ``captions`` session (P2P, the browser cannot transcribe).
    captions: SessionWanted | None = None


NOTHING = MediaPlan()


def sfu_transcribes(state: CallState) -> bool:
    """Whether the ``call`` sessions of this call tap their microphones now."""
    return state.transcription and state.mode == "sfu" and state.status != "ended"


def captions_uplink(state: CallState, participant_id: str) -> SessionWanted | None:
    """The ``captions`` session this participant should have, if any."""
    node = state.captions_node_id
    if (
        node is None
        or not state.transcription
        or state.mode != "p2p"
        or state.status == "ended"
        or participant_id not in state.captions_uplinks
    ):
        return None
    return SessionWanted(node, idle=False, transcription=True)


def server_transcribes(state: CallState, participant_id: str) -> bool:
    """Whether a media node taps this participant's microphone now (so its browser must
    not send its own transcript as well)."""
    return sfu_transcribes(state) or captions_uplink(state, participant_id) is not None


def plan(state: CallState, participant_id: str) -> MediaPlan:
    """What this participant should have now (see the module docstring)."""
    if state.status == "ended" or not any(
        p.participant_id == participant_id for p in state.participants
    ):
        return NOTHING
    media = _media_plan(state, participant_id)
    captions = captions_uplink(state, participant_id)
    if captions is not None:
        media = replace(media, captions=captions)
    session = media.session
    if session is not None and not session.idle and sfu_transcribes(state):
        media = replace(media, session=replace(session, transcription=True))
    return media


def _media_plan(state: CallState, participant_id: str) -> MediaPlan:
    m = state.migration
    if m is not None and m.to_mode == "sfu" and m.node_id is not None:
        switch = None
        if participant_id not in m.ready:
            switch = SwitchWanted(
                epoch=m.epoch,
                mode="sfu",
                kind="migration",
                node_id=m.node_id,
                deadline_at=m.deadline_at,
            )
        return MediaPlan(session=SessionWanted(m.node_id, idle=False), switch=switch)
    if m is not None and m.to_mode == "p2p":
        others = [
            p.participant_id for p in state.participants if p.participant_id != participant_id
        ]
        peer = others[0] if others else None
        switch = None
        if participant_id not in m.ready:
            switch = SwitchWanted(
                epoch=m.epoch,
                mode="p2p",
                kind="migration",
                offer_to=peer if m.offerer_id == participant_id else None,
                peer_id=peer,
                deadline_at=m.deadline_at,
            )
        old = state.media_node_id
        session = SessionWanted(old, idle=False) if state.mode == "sfu" and old else None
        return MediaPlan(session=session, switch=switch)
    if state.mode == "sfu" and state.media_node_id is not None:
        return MediaPlan(
            session=SessionWanted(state.media_node_id, idle=False),
            switch=SwitchWanted(
                epoch=state.epoch, mode="sfu", kind="attach", node_id=state.media_node_id
            ),
        )
    if state.prewarm_node_id is not None:
        return MediaPlan(session=SessionWanted(state.prewarm_node_id, idle=True), prewarm=True)
    return NOTHING
