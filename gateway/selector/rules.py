"""The mode selector's rule table, as one pure function: :func:`decide`.

From the design document: a DIRECT call is always peer-to-peer, never more than two. A
GROUP call is peer-to-peer while at most two are in, on the SFU from the third, and back
to peer-to-peer when it drops to two (after ``to_p2p_hold_s``, so a drop-and-rejoin does
not migrate twice); up to 50 participants. On top of counts: a call whose direct path
failed (any kind, DIRECT too) moves to the SFU and stays there; a call on a media node that
stopped reporting moves to another node; a migration that failed is retried after a
back-off. While a GROUP call of a larger conversation is peer-to-peer, its participants may
hold idle sessions on the node it would move to (pre-warm), so the switch only starts
sending. Orthogonal to the mode: a peer-to-peer call with transcription on, in which someone
asked for a captions uplink (their browser cannot transcribe), has a node for those
audio-only uplinks (:func:`captions_node`); every decision carries that placement too.

:func:`decide` reads the call's state, the live media nodes and the time, and returns what
to do now (and when to look again). It never performs I/O; :mod:`gateway.selector.service`
carries the decision out by compare-and-set.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from gateway.migration import everyone_ready
from gateway.selector.placement import NodeLoad, choose
from schemas.call_events import CallMode, MigrationReason
from schemas.call_state import CallState


@dataclass(frozen=True, slots=True)
class Rules:
    """The selector's tunables (from :class:`gateway.selector.settings.SelectorSettings`)."""

    #: How long a GROUP call on the SFU must stay at two or fewer before going back to P2P.
    to_p2p_hold_s: float = 5.0
    #: How long participants have to bring up the new path.
    deadline_s: float = 10.0
    #: Hold idle SFU sessions while a GROUP call of more than two members is P2P.
    prewarm: bool = True
    #: Back-off after a failed migration: base * 2^(failures - 1), at most ``retry_max_s``.
    retry_base_s: float = 2.0
    retry_max_s: float = 30.0

    def retry_in(self, failures: int) -> float:
        return float(min(self.retry_max_s, self.retry_base_s * 2.0 ** max(0, failures)))


DecisionKind = Literal["nothing", "start", "complete", "abandon", "no_node", "prewarm"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a call now. ``wake_at``: when to look at it again without an event.

    ``captions_change``: also (in the same write) put the call's captions uplinks on
    ``captions_node_id`` (``None``: release them).
    """

    kind: DecisionKind
    to_mode: CallMode | None = None
    node_id: str | None = None
    reason: MigrationReason = "participant_count"
    outcome: Literal["failed", "rolled_back"] = "failed"
    offerer_id: str | None = None
    wake_at: float | None = None
    captions_change: bool = False
    captions_node_id: str | None = None

    @property
    def acts(self) -> bool:
        """Whether carrying it out writes anything."""
        return self.kind != "nothing" or self.captions_change


NOTHING = Decision("nothing")


def target_mode(
    state: CallState, *, now: float, below_since: float | None, rules: Rules
) -> tuple[CallMode, float | None]:
    """The mode the rules want now, and when that may change by itself (the hold)."""
    n = len(state.participants)
    if state.p2p_failed:
        return "sfu", None
    if state.conversation_type == "DIRECT":
        return "p2p", None
    if n >= 3:
        return "sfu", None
    migrating_to_p2p = state.migration is not None and state.migration.to_mode == "p2p"
    if state.mode == "sfu" and not migrating_to_p2p:
        since = now if below_since is None else below_since
        if now < since + rules.to_p2p_hold_s:
            return "sfu", since + rules.to_p2p_hold_s
    return "p2p", None


def wants_prewarm(state: CallState, rules: Rules) -> bool:
    members = 1 + len(state.invitees)  # the initiator and everyone rung
    return (
        rules.prewarm
        and state.conversation_type == "GROUP"
        and state.mode == "p2p"
        and state.migration is None
        and not state.p2p_failed
        and members > 2
        and len(state.participants) >= 2
    )


def offerer(state: CallState) -> str | None:
    """Back on P2P, the participant who has been in the longest sends the offer."""
    if len(state.participants) < 2:
        return None
    first = min(state.participants, key=lambda p: (p.joined_at, p.participant_id))
    return first.participant_id


def captions_node(state: CallState, nodes: Sequence[NodeLoad]) -> str | None:
    """The media node for this call's captions uplinks (``None``: none wanted, or none
    with room).

    Wanted while the call is peer-to-peer (also while it migrates to the SFU: the uplinks
    carry the captions until it completes), transcription is on and a participant still
    in the call asked for one. A placed call stays on its node while that node is ready;
    otherwise the pre-warm node if it has room, else the least loaded node with room.
    """
    if state.status == "ended" or not state.transcription or state.mode != "p2p":
        return None
    present = {p.participant_id for p in state.participants}
    wanted = [pid for pid in state.captions_uplinks if pid in present]
    if not wanted:
        return None
    live = {n.node_id: n for n in nodes}
    current = live.get(state.captions_node_id or "")
    if current is not None and current.ready:
        return current.node_id
    warm = live.get(state.prewarm_node_id or "")
    if warm is not None and warm.ready and warm.free >= len(wanted):
        return warm.node_id
    return choose(nodes, needed=len(wanted))


def decide(
    state: CallState,
    nodes: Sequence[NodeLoad],
    *,
    now: float,
    below_since: float | None = None,
    rules: Rules = Rules(),
) -> Decision:
    """What the selector does with this call now (see the module docstring)."""
    decision = _mode_decision(state, nodes, now=now, below_since=below_since, rules=rules)
    captions = captions_node(state, nodes)
    if captions != state.captions_node_id and not (state.status == "ended" and captions is None):
        return replace(decision, captions_change=True, captions_node_id=captions)
    return decision


def _mode_decision(
    state: CallState,
    nodes: Sequence[NodeLoad],
    *,
    now: float,
    below_since: float | None,
    rules: Rules,
) -> Decision:
    if state.status == "ended" or not state.participants:
        return NOTHING
    live = {n.node_id: n for n in nodes}
    target, hold_until = target_mode(state, now=now, below_since=below_since, rules=rules)
    needed = len(state.participants)
    m = state.migration
    if m is not None:
        if m.node_id is not None and m.node_id not in live:
            return Decision("abandon", reason="node_unavailable")
        if m.failures:
            refused = any(f.reason == "node_refused" for f in m.failures)
            return Decision("abandon", reason="node_refused" if refused else "path_failed")
        if everyone_ready(state):
            return Decision("complete")
        if target == state.mode and m.to_mode != state.mode:
            return Decision("abandon", outcome="rolled_back", reason="superseded")
        if now >= m.deadline_at:
            return Decision("abandon", reason="deadline")
        return Decision("nothing", wake_at=m.deadline_at)

    if target == state.mode:
        if state.mode == "sfu" and state.media_node_id not in live:
            if _waiting(state, now):
                return Decision("nothing", wake_at=state.mode_retry_at)
            other = choose(nodes, needed=needed, exclude=[state.media_node_id or ""])
            if other is None:
                return Decision("no_node")
            return Decision("start", to_mode="sfu", node_id=other, reason="node_unavailable")
        if wants_prewarm(state, rules):
            held = state.prewarm_node_id
            if held is None or held not in live:
                spare = choose(nodes, needed=needed)
                if spare is not None and spare != held:
                    return Decision("prewarm", node_id=spare, wake_at=hold_until)
        elif state.prewarm_node_id is not None:
            return Decision("prewarm", node_id=None, wake_at=hold_until)
        return Decision("nothing", wake_at=hold_until)

    if _waiting(state, now):
        return Decision("nothing", wake_at=state.mode_retry_at)
    if state.p2p_failed:
        reason: MigrationReason = "p2p_media_failed"
    elif state.failed_migrations:
        reason = "retry"
    else:
        reason = "participant_count"
    if target == "sfu":
        prewarmed = state.prewarm_node_id
        if prewarmed is not None and prewarmed in live and live[prewarmed].ready:
            node: str | None = prewarmed
        else:
            node = choose(nodes, needed=needed)
        if node is None:
            return Decision("no_node")
        return Decision("start", to_mode="sfu", node_id=node, reason=reason)
    return Decision("start", to_mode="p2p", reason=reason, offerer_id=offerer(state))


def _waiting(state: CallState, now: float) -> bool:
    return state.mode_retry_at is not None and now < state.mode_retry_at
