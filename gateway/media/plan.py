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
"""

from dataclasses import dataclass
from typing import Literal

from schemas.call_events import CallMode
from schemas.call_state import CallState


@dataclass(frozen=True, slots=True)
class SessionWanted:
    """A session on ``node_id``; ``idle``: connected but sending nothing (pre-warm)."""

    node_id: str
    idle: bool


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


NOTHING = MediaPlan()


def plan(state: CallState, participant_id: str) -> MediaPlan:
    """What this participant should have now (see the module docstring)."""
    if state.status == "ended" or not any(
        p.participant_id == participant_id for p in state.participants
    ):
        return NOTHING
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
