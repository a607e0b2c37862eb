"""Migrations between peer-to-peer and SFU, as pure transitions of a call's state.

The mode selector starts, completes and abandons migrations; gateways record what their
clients report. Every function returns an :class:`~gateway.state_machine.Outcome` (or
``None`` when there is nothing to do) that :class:`gateway.call_store.CallStore` writes by
compare-and-set, so any number of selectors and gateways can race: the first write wins,
the others re-run on the new state and find nothing left to do.

Make-before-break, both ways: participants bring up the new path *while keeping the old
one* and report ``ready`` once it carries the others' media. Only when every participant
still in the call is ready does the migration complete; then clients drop the old path. If
anyone's new path fails, the media node goes away or the deadline passes, the migration
ends ``failed`` and everybody still has the old path: nobody is ever left without media.
"""

from typing import Literal

import msgspec

from gateway.state_machine import Outcome
from schemas.call_commands import MigrateToP2p, MigrateToSfu, Prewarm
from schemas.call_events import (
    CallMode,
    CallModeChanged,
    MigrationOutcome,
    MigrationReason,
    MigrationStarted,
    ParticipantMediaPath,
)
from schemas.call_state import CallState, Migration, PathFailure

_replace = msgspec.structs.replace


def start(
    state: CallState,
    *,
    to_mode: CallMode,
    reason: MigrationReason,
    now: float,
    deadline_s: float,
    node_id: str | None = None,
    offerer_id: str | None = None,
) -> Outcome:
    """Begin moving the call to ``to_mode`` (on ``node_id`` for the SFU) at a new epoch."""
    epoch = state.epoch + 1
    prewarmed = to_mode == "sfu" and node_id is not None and node_id == state.prewarm_node_id
    migration = Migration(
        epoch=epoch,
        from_mode=state.mode,
        to_mode=to_mode,
        reason=reason,
        node_id=node_id,
        started_at=now,
        deadline_at=now + deadline_s,
        prewarmed=prewarmed,
        offerer_id=offerer_id,
    )
    out = Outcome(_replace(state, epoch=epoch, migration=migration, updated_at=now))
    out.events.append(
        MigrationStarted(
            call_id=state.call_id,
            from_mode=state.mode,
            to_mode=to_mode,
            epoch=epoch,
            reason=reason,
            node_id=node_id,
            deadline_s=deadline_s,
            prewarmed=prewarmed,
        )
    )
    if to_mode == "sfu":
        assert node_id is not None, "an SFU migration needs a media node"
        out.commands.append(
            MigrateToSfu(call_id=state.call_id, epoch=epoch, node_id=node_id, deadline_s=deadline_s)
        )
    else:
        out.commands.append(
            MigrateToP2p(
                call_id=state.call_id, epoch=epoch, offerer_id=offerer_id, deadline_s=deadline_s
            )
        )
    return out


def report(
    state: CallState,
    participant_id: str,
    *,
    epoch: int,
    mode: CallMode,
    ok: bool,
    now: float,
    reason: str = "",
    peer_id: str | None = None,
    max_gap_ms: float = 0.0,
) -> Outcome | None:
    """A client's report on a media path; ``None`` if it changes nothing (stale, repeated).

    During a migration to ``mode`` at ``epoch``: ready or failed for that migration (the
    last ready completes it). Outside one, a failed direct path marks the call
    ``p2p_failed`` (the selector moves it to the SFU for good).
    """
    if state.status == "ended" or not any(
        p.participant_id == participant_id for p in state.participants
    ):
        return None
    m = state.migration
    event = ParticipantMediaPath(
        call_id=state.call_id,
        participant_id=participant_id,
        epoch=epoch,
        mode=mode,
        state="ready" if ok else "failed",
        reason=reason[:64],
        peer_id=peer_id,
        max_gap_ms=max_gap_ms,
    )
    if m is not None and epoch == m.epoch and mode == m.to_mode:
        if ok:
            if participant_id in m.ready:
                return None
            m = _replace(
                m, ready=[*m.ready, participant_id], max_gap_ms=max(m.max_gap_ms, max_gap_ms)
            )
        else:
            if any(f.participant_id == participant_id for f in m.failures):
                return None
            failure = PathFailure(participant_id=participant_id, reason=reason[:64] or "failed")
            m = _replace(m, failures=[*m.failures, failure])
        out = Outcome(_replace(state, migration=m))
        out.events.append(event)
        complete_if_ready(out, now=now)
        return out
    if not ok and mode == "p2p" and state.mode == "p2p" and epoch == state.epoch:
        if state.p2p_failed:
            return None
        out = Outcome(_replace(state, p2p_failed=True))
        out.events.append(event)
        return out
    return None


def everyone_ready(state: CallState) -> bool:
    m = state.migration
    if m is None or m.failures:
        return False
    ready = set(m.ready)
    return all(p.participant_id in ready for p in state.participants)


def complete_if_ready(out: Outcome, *, now: float) -> None:
    """Complete the migration in ``out`` if every participant still in the call is ready."""
    state = out.state
    m = state.migration
    if m is None or not everyone_ready(state):
        return
    out.state = _replace(
        state,
        mode=m.to_mode,
        media_node_id=m.node_id if m.to_mode == "sfu" else None,
        migration=None,
        failed_migrations=0,
        mode_retry_at=None,
        # On the SFU the sessions are in use; back on P2P the selector decides afresh
        # whether to pre-warm again.
        prewarm_node_id=None,
        small_since=state.small_since if m.to_mode == "sfu" else None,
    )
    out.events.append(_ended(state, m, "completed", m.reason, now))


def complete(state: CallState, *, now: float) -> Outcome | None:
    """Complete the migration if everyone still in the call is ready (someone unready left)."""
    out = Outcome(state)
    complete_if_ready(out, now=now)
    return out if out.events else None


def abandon(
    state: CallState,
    *,
    outcome: Literal["failed", "rolled_back"],
    reason: MigrationReason,
    now: float,
    retry_in_s: float,
) -> Outcome | None:
    """End the migration without switching: the call stays in its current mode.

    ``failed`` counts toward the retry back-off (``retry_in_s`` from now); ``rolled_back``
    (the target no longer applies) does not.
    """
    m = state.migration
    if m is None:
        return None
    failed = outcome == "failed"
    out = Outcome(
        _replace(
            state,
            migration=None,
            failed_migrations=state.failed_migrations + (1 if failed else 0),
            mode_retry_at=now + retry_in_s if failed else state.mode_retry_at,
        )
    )
    out.events.append(_ended(state, m, outcome, reason, now))
    return out


def no_node(
    state: CallState,
    *,
    now: float,
    retry_in_s: float,
    reason: MigrationReason = "node_unavailable",
) -> Outcome:
    """The call should be on the SFU but no media node can take it (``node_unavailable``:
    none is alive; ``node_refused``: none has room): say so once per attempt."""
    epoch = state.epoch + 1
    out = Outcome(
        _replace(
            state,
            epoch=epoch,
            failed_migrations=state.failed_migrations + 1,
            mode_retry_at=now + retry_in_s,
        )
    )
    out.events.append(
        CallModeChanged(
            call_id=state.call_id,
            from_mode=state.mode,
            to_mode="sfu",
            epoch=epoch,
            duration_ms=0.0,
            outcome="failed",
            reason=reason,
        )
    )
    return out


def set_prewarm(state: CallState, node_id: str | None) -> Outcome | None:
    """Hold (or stop holding) idle sessions on ``node_id`` while the call is P2P."""
    if state.prewarm_node_id == node_id:
        return None
    out = Outcome(_replace(state, prewarm_node_id=node_id))
    # A release is a command too: the gateways reconcile on it and close the idle sessions
    # (nothing else would tell them; an idle session's lease is renewed while its socket
    # lives).
    out.commands.append(Prewarm(call_id=state.call_id, node_id=node_id))
    return out


def _ended(
    state: CallState,
    m: Migration,
    outcome: MigrationOutcome,
    reason: MigrationReason,
    now: float,
) -> CallModeChanged:
    return CallModeChanged(
        call_id=state.call_id,
        from_mode=m.from_mode,
        to_mode=m.to_mode,
        epoch=m.epoch,
        duration_ms=round(max(0.0, now - m.started_at) * 1000, 1),
        max_gap_ms=m.max_gap_ms,
        outcome=outcome,
        reason=reason,
        node_id=m.node_id,
    )
