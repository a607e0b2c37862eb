"""The mode selector's rule table (pure): every row of the design's rules and ours."""

import msgspec
import pytest

from gateway import migration
from gateway import state_machine as sm
from gateway.selector.placement import NodeLoad, NodeTable, choose
from gateway.selector.rules import Decision, Rules, decide, hold_since, offerer, target_mode
from gateway.tokens import Principal
from schemas.call_events import CallModeChanged
from schemas.call_state import CallState, ConversationMember, ConversationRecord
from tests.support.samples import idle_node_heartbeat

T0 = 1_000_000.0
RULES = Rules(to_p2p_hold_s=5, deadline_s=10, prewarm=False, retry_base_s=2, retry_max_s=30)
TIMERS = sm.Timers(
    ring_timeout_s=30, heartbeat_timeout_s=40, reconnect_grace_s=10, max_duration_s=3600
)


def node(node_id: str = "m1", *, free: int = 50, cpu: float = 10.0, ready: bool = True) -> NodeLoad:
    return NodeLoad(
        node_id=node_id,
        ready=ready,
        capacity=50,
        free=free,
        participants=50 - free,
        cpu_percent=cpu,
        cpu_count=2,
        seen_at=T0,
    )


NODES = [node()]


def call(kind: str = "GROUP", people: int = 2, members: int = 4) -> CallState:
    users = [f"u{i}" for i in range(max(members, people))]
    conv = ConversationRecord(
        conversation_id="conv",
        type=kind,  # type: ignore[arg-type]
        members=[ConversationMember(user_id=u) for u in users[: 2 if kind == "DIRECT" else None]],
    )
    state = sm.start_call(
        call_id="call-1",
        conversation=conv,
        initiator=Principal(users[0], "user"),
        participant_id="p-0",
        media="video",
        now=T0,
        timers=TIMERS,
        resume_token="t0",
    ).state
    for i in range(1, people):
        state = sm.join(
            state,
            Principal(users[i], "user"),
            participant_id=f"p-{i}",
            now=T0 + i,
            resume_token=f"t{i}",
            max_participants=50,
            may_join=True,
        ).state
    return state


def on(state: CallState, decision: Decision, now: float = T0 + 10) -> CallState:
    """Apply a start decision the way the selector does."""
    assert decision.kind == "start" and decision.to_mode is not None
    return migration.start(
        state,
        to_mode=decision.to_mode,
        reason=decision.reason,
        now=now,
        deadline_s=RULES.deadline_s,
        node_id=decision.node_id,
        offerer_id=decision.offerer_id,
    ).state


def all_ready(state: CallState, now: float = T0 + 11) -> CallState:
    assert state.migration is not None
    for p in state.participants:
        out = migration.report(
            state,
            p.participant_id,
            epoch=state.migration.epoch if state.migration else state.epoch,
            mode=state.migration.to_mode if state.migration else state.mode,
            ok=True,
            now=now,
        )
        if out is not None:
            state = out.state
    return state


@pytest.mark.parametrize(
    ("kind", "people", "mode"),
    [
        ("DIRECT", 2, "p2p"),
        ("GROUP", 1, "p2p"),
        ("GROUP", 2, "p2p"),
        ("GROUP", 3, "sfu"),
        ("GROUP", 4, "sfu"),
        ("GROUP", 50, "sfu"),
    ],
)
def test_the_count_rule(kind: str, people: int, mode: str) -> None:
    state = call(kind, people, members=max(people, 4))
    assert target_mode(state, now=T0, below_since=None, rules=RULES)[0] == mode
    decision = decide(state, NODES, now=T0 + 10, rules=RULES)
    if mode == "p2p":
        assert decision.kind == "nothing"
    else:
        assert (decision.kind, decision.to_mode, decision.node_id) == ("start", "sfu", "m1")
        assert decision.reason == "participant_count"


def test_group_grows_to_sfu_and_back_after_the_hold() -> None:
    state = on(call("GROUP", 3), decide(call("GROUP", 3), NODES, now=T0 + 10, rules=RULES))
    assert state.migration is not None and state.mode == "p2p" and state.epoch == 1
    # Deciding again while migrating: wait (the deadline is the next look).
    again = decide(state, NODES, now=T0 + 10.5, rules=RULES)
    assert again == Decision("nothing", wake_at=T0 + 20)
    state = all_ready(state)
    assert state.mode == "sfu" and state.media_node_id == "m1" and state.migration is None
    # A fourth joins, then leaves: still SFU, nothing to do.
    assert decide(state, NODES, now=T0 + 12, rules=RULES).kind == "nothing"
    # Down to two: not before the hold.
    two = msgspec.structs.replace(state, participants=state.participants[:2])
    held = decide(two, NODES, now=T0 + 20, below_since=T0 + 18, rules=RULES)
    assert held == Decision("nothing", wake_at=T0 + 23)
    back = decide(two, NODES, now=T0 + 23, below_since=T0 + 18, rules=RULES)
    assert (back.kind, back.to_mode, back.offerer_id) == ("start", "p2p", "p-0")
    state = all_ready(on(two, back, now=T0 + 23), now=T0 + 24)
    assert state.mode == "p2p" and state.media_node_id is None and state.epoch == 2


def test_a_rejoin_within_the_hold_never_migrates() -> None:
    sfu = all_ready(on(call("GROUP", 3), decide(call("GROUP", 3), NODES, now=T0, rules=RULES)))
    two = msgspec.structs.replace(sfu, participants=sfu.participants[:2])
    assert decide(two, NODES, now=T0 + 13, below_since=T0 + 12, rules=RULES).kind == "nothing"
    assert decide(sfu, NODES, now=T0 + 14, rules=RULES).kind == "nothing"  # back to three


def test_direct_never_leaves_p2p_on_count_but_falls_back_when_its_path_fails() -> None:
    state = call("DIRECT", 2)
    assert decide(state, NODES, now=T0 + 5, rules=RULES).kind == "nothing"
    failed = migration.report(
        state, "p-1", epoch=0, mode="p2p", ok=False, now=T0 + 6, reason="ice_failed"
    )
    assert failed is not None and failed.state.p2p_failed
    assert [type(e).__name__ for e in failed.events] == ["ParticipantMediaPath"]
    decision = decide(failed.state, NODES, now=T0 + 6, rules=RULES)
    assert (decision.kind, decision.to_mode, decision.reason) == (
        "start",
        "sfu",
        "p2p_media_failed",
    )
    sfu = all_ready(on(failed.state, decision))
    # It stays on the SFU for the rest of the call, also at two.
    assert decide(sfu, NODES, now=T0 + 60, below_since=T0, rules=RULES).kind == "nothing"
    # A second failure report changes nothing.
    assert migration.report(failed.state, "p-0", epoch=0, mode="p2p", ok=False, now=T0 + 7) is None


def test_a_node_that_refuses_leaves_the_call_on_p2p_and_is_retried_after_a_backoff() -> None:
    state = call("GROUP", 3)
    state = on(state, decide(state, NODES, now=T0, rules=RULES), now=T0)
    refused = migration.report(
        state, "p-2", epoch=1, mode="sfu", ok=False, now=T0 + 1, reason="node_refused"
    )
    assert refused is not None
    decision = decide(refused.state, NODES, now=T0 + 1, rules=RULES)
    assert decision == Decision("abandon", reason="node_refused")
    out = migration.abandon(
        refused.state,
        outcome="failed",
        reason=decision.reason,
        now=T0 + 1,
        retry_in_s=RULES.retry_in(0),
    )
    assert out is not None and out.state.mode == "p2p" and out.state.migration is None
    ended = out.events[-1]
    assert (ended.outcome, ended.reason) == ("failed", "node_refused")  # type: ignore[attr-defined]
    assert decide(out.state, NODES, now=T0 + 2, rules=RULES) == Decision("nothing", wake_at=T0 + 3)
    retry = decide(out.state, NODES, now=T0 + 3, rules=RULES)
    assert (retry.kind, retry.reason) == ("start", "retry")


def test_deadline_dead_node_and_superseded_migrations_end() -> None:
    three = call("GROUP", 3)
    started = on(three, decide(three, NODES, now=T0, rules=RULES), now=T0)
    assert decide(started, NODES, now=T0 + 10, rules=RULES) == Decision(
        "abandon", reason="deadline"
    )
    assert decide(started, [node("m2")], now=T0 + 1, rules=RULES) == Decision(
        "abandon", reason="node_unavailable"
    )
    shrunk = msgspec.structs.replace(started, participants=started.participants[:2])
    assert decide(shrunk, NODES, now=T0 + 1, rules=RULES) == Decision(
        "abandon", outcome="rolled_back", reason="superseded"
    )


def test_someone_unready_leaving_completes_the_migration() -> None:
    three = call("GROUP", 4)
    four = on(three, decide(three, NODES, now=T0, rules=RULES), now=T0)
    for pid in ("p-0", "p-1", "p-2"):
        out = migration.report(four, pid, epoch=1, mode="sfu", ok=True, now=T0 + 1)
        assert out is not None
        four = out.state
    assert four.migration is not None  # p-3 is not ready yet
    gone = sm.leave(four, "p-3", "left", now=T0 + 2).state
    assert decide(gone, NODES, now=T0 + 2, rules=RULES) == Decision("complete")
    done = migration.complete(gone, now=T0 + 2)
    assert done is not None and done.state.mode == "sfu"
    changed = done.events[-1]
    assert changed.outcome == "completed" and changed.duration_ms == 2000  # type: ignore[attr-defined]


def test_stale_and_repeated_reports_change_nothing() -> None:
    three = call("GROUP", 3)
    state = on(three, decide(three, NODES, now=T0, rules=RULES), now=T0)
    assert migration.report(state, "p-0", epoch=0, mode="sfu", ok=True, now=T0) is None
    assert migration.report(state, "p-9", epoch=1, mode="sfu", ok=True, now=T0) is None
    once = migration.report(state, "p-0", epoch=1, mode="sfu", ok=True, now=T0)
    assert once is not None
    assert migration.report(once.state, "p-0", epoch=1, mode="sfu", ok=True, now=T0) is None


def test_no_node_with_room_is_one_failure_event_then_a_backoff() -> None:
    three = call("GROUP", 3)
    full = decide(three, [node(free=2), node("m2", ready=False)], now=T0, rules=RULES)
    assert full == Decision("no_node", reason="node_refused")  # nodes alive, none has room
    assert decide(three, [], now=T0, rules=RULES) == Decision("no_node", reason="node_unavailable")
    out = migration.no_node(three, now=T0, retry_in_s=2, reason=full.reason)
    assert out.state.epoch == 1 and out.state.mode_retry_at == T0 + 2
    assert [(e.outcome, e.reason) for e in out.events] == [("failed", "node_refused")]  # type: ignore[attr-defined]
    assert decide(out.state, [node(free=2)], now=T0 + 1, rules=RULES).kind == "nothing"


def test_a_call_on_a_dead_node_moves_to_another() -> None:
    three = call("GROUP", 3)
    sfu = all_ready(on(three, decide(three, NODES, now=T0, rules=RULES), now=T0))
    moved = decide(sfu, [node("m2")], now=T0 + 30, rules=RULES)
    assert (moved.kind, moved.to_mode, moved.node_id, moved.reason) == (
        "start",
        "sfu",
        "m2",
        "node_unavailable",
    )


def test_prewarm_holds_idle_sessions_on_the_node_the_call_would_move_to() -> None:
    rules = Rules(prewarm=True)
    two = call("GROUP", 2, members=4)
    decision = decide(two, NODES, now=T0, rules=rules)
    assert (decision.kind, decision.node_id) == ("prewarm", "m1")
    warm = migration.set_prewarm(two, "m1")
    assert warm is not None and [type(c).__name__ for c in warm.commands] == ["Prewarm"]
    assert decide(warm.state, NODES, now=T0, rules=rules).kind == "nothing"
    # The third joins: the migration goes to the pre-warmed node and says so.
    three = sm.join(
        warm.state,
        Principal("u2", "user"),
        participant_id="p-2",
        now=T0 + 1,
        resume_token="t",
        max_participants=50,
        may_join=True,
    ).state
    start = decide(three, [node("m0", cpu=0.0), node("m1", cpu=90.0)], now=T0 + 1, rules=rules)
    assert start.node_id == "m1"
    assert on(three, start).migration.prewarmed  # type: ignore[union-attr]
    # A two-member group or a DIRECT call never pre-warms.
    assert decide(call("GROUP", 2, members=2), NODES, now=T0, rules=rules).kind == "nothing"
    assert decide(call("DIRECT", 2), NODES, now=T0, rules=rules).kind == "nothing"


def test_placement_picks_the_least_loaded_ready_node_with_room() -> None:
    nodes = [
        node("busy", cpu=150.0, free=40),
        node("full", free=1),
        node("draining", ready=False),
        node("calm", cpu=20.0, free=30),
    ]
    assert choose(nodes, needed=4) == "calm"
    assert choose(nodes, needed=4, exclude=["calm"]) == "busy"
    assert choose(nodes, needed=100) is None
    table = NodeTable(expiry_s=6)
    beat = idle_node_heartbeat("m1")
    table.update(beat, T0)
    assert [n.node_id for n in table.live(T0 + 5)] == ["m1"]
    table.reserve("m1", 10)
    assert table.live(T0 + 5)[0].free == 40
    assert table.live(T0 + 7) == []  # stopped reporting: never chosen


def test_the_longest_present_offers_on_the_way_back() -> None:
    assert offerer(call("GROUP", 2)) == "p-0"
    assert offerer(call("GROUP", 1)) is None


def test_releasing_a_prewarm_is_a_command_the_gateways_reconcile_on() -> None:
    two = call("GROUP", 2, members=4)
    warm = migration.set_prewarm(two, "m1")
    assert warm is not None
    released = migration.set_prewarm(warm.state, None)
    assert released is not None and released.state.prewarm_node_id is None
    assert [(type(c).__name__, getattr(c, "node_id", "?")) for c in released.commands] == [
        ("Prewarm", None)
    ]
    assert migration.set_prewarm(released.state, None) is None  # nothing to release twice


def test_a_call_that_ends_mid_migration_closes_the_migration() -> None:
    three = call("GROUP", 3)
    migrating = on(three, decide(three, NODES, now=T0, rules=RULES))
    assert migrating.migration is not None
    ended = sm.end(migrating, "completed", now=T0 + 12, by=None)
    closes = [e for e in ended.events if isinstance(e, CallModeChanged)]
    assert [(e.epoch, e.outcome, e.reason) for e in closes] == [
        (migrating.migration.epoch, "rolled_back", "call_ended")
    ]
    assert ended.state.migration is None and ended.state.status == "ended"


def test_the_hold_is_kept_in_the_call_so_every_selector_instance_agrees() -> None:
    sfu = all_ready(on(call("GROUP", 3), decide(call("GROUP", 3), NODES, now=T0, rules=RULES)))
    two = sm.leave(sfu, sfu.participants[-1].participant_id, "left", now=T0 + 20).state
    assert hold_since(two, T0 + 20) == T0 + 20  # just became small: the hold starts now
    kept = msgspec.structs.replace(two, small_since=T0 + 20)
    # Another instance, later, measures the same hold from the same instant.
    assert hold_since(kept, T0 + 23) == T0 + 20
    assert decide(kept, NODES, now=T0 + 23, below_since=T0 + 20, rules=RULES).kind == "nothing"
    assert decide(kept, NODES, now=T0 + 25, below_since=T0 + 20, rules=RULES).to_mode == "p2p"
    assert hold_since(sfu, T0 + 23) is None  # three again: no hold


def test_a_just_started_table_does_not_take_silence_for_death() -> None:
    table = NodeTable(6.0, started_at=T0)
    assert not table.warm(T0 + 1) and table.warm(T0 + 6)
    assert not table.heard_of("m1") and not table.heard_of(None)
    table.update(
        idle_node_heartbeat("m1"),
        T0 + 1,
    )
    table.forget("m1")  # found dead: it is gone, not merely unheard of
    assert table.heard_of("m1")


# --- captions uplinks (a P2P call whose browser cannot transcribe) ------------------------
def captioned(state: CallState, *asking: str, transcription: bool = True) -> CallState:
    """``state`` with these participants asking for an uplink (transcription on then, as
    asking needs), and transcription as given after."""
    state = msgspec.structs.replace(state, transcription=True)
    for pid in asking:
        out = sm.set_captions_uplink(state, pid, True, now=T0)
        assert out is not None
        state = out.state
    return msgspec.structs.replace(state, transcription=transcription)


def placed(state: CallState, decision: Decision) -> CallState:
    """Apply a decision's captions placement the way the selector does."""
    assert decision.captions_change
    out = sm.set_captions_node(state, decision.captions_node_id)
    assert out is not None
    return out.state


@pytest.mark.parametrize(
    ("kind", "people", "asking", "transcription", "node_id"),
    [
        ("DIRECT", 2, ("p-1",), True, "m1"),  # a DIRECT call stays P2P: the uplink is how
        ("GROUP", 2, ("p-0", "p-1"), True, "m1"),
        ("GROUP", 2, (), True, None),  # nobody asked
        ("GROUP", 2, ("p-1",), False, None),  # transcription off: nothing to transcribe
    ],
)
def test_a_p2p_call_whose_browsers_cannot_transcribe_gets_a_captions_node(
    kind: str, people: int, asking: tuple[str, ...], transcription: bool, node_id: str | None
) -> None:
    state = captioned(call(kind, people), *asking, transcription=transcription)
    decision = decide(state, NODES, now=T0 + 1, rules=RULES)
    assert decision.kind == "nothing"  # the mode is another matter
    assert decision.captions_change is (node_id is not None)
    assert decision.captions_node_id == node_id
    if node_id is not None:
        state = placed(state, decision)
        assert state.captions_node_id == node_id
        assert not decide(state, NODES, now=T0 + 2, rules=RULES).acts  # placed: stays


def test_the_captions_node_follows_the_call_off_and_on_and_away() -> None:
    state = captioned(call("GROUP", 2), "p-1")
    state = placed(state, decide(state, NODES, now=T0, rules=RULES))
    # Its node dies (or drains): the uplinks move to another ready node with room.
    moved = decide(state, [node("m2"), node("m3", ready=False)], now=T0 + 1, rules=RULES)
    assert (moved.captions_change, moved.captions_node_id) == (True, "m2")
    # No node at all: released (looked at again when one reports).
    gone = decide(state, [], now=T0 + 1, rules=RULES)
    assert (gone.captions_change, gone.captions_node_id) == (True, None)
    # Transcription off: released; on again: placed again (the wish was kept).
    off = sm.set_transcription(state, "p-0", False, now=T0 + 2)
    assert off is not None and off.state.captions_uplinks == ["p-1"]
    released = decide(off.state, NODES, now=T0 + 2, rules=RULES)
    assert (released.captions_change, released.captions_node_id) == (True, None)
    # The one who asked leaves: nobody needs it.
    left = sm.leave(state, "p-1", "left", now=T0 + 3)
    assert left.state.captions_uplinks == []
    assert decide(left.state, NODES, now=T0 + 3, rules=RULES).captions_node_id is None


def test_captions_uplinks_go_with_p2p_and_come_back_with_it() -> None:
    rules = Rules(prewarm=True)
    two = captioned(call("GROUP", 2, members=4), "p-1")
    first = decide(two, [node("m0", cpu=0.0), node("m1", cpu=90.0)], now=T0, rules=rules)
    # Pre-warm and captions in one decision; the captions prefer the pre-warm node.
    assert (first.kind, first.node_id) == ("prewarm", "m0")
    warm = migration.set_prewarm(two, "m1")
    assert warm is not None
    prefer = decide(warm.state, [node("m0", cpu=0.0), node("m1", cpu=90.0)], now=T0, rules=rules)
    assert prefer.captions_node_id == "m1"
    state = placed(warm.state, prefer)
    three = sm.join(
        state,
        Principal("u2", "user"),
        participant_id="p-2",
        now=T0 + 1,
        resume_token="t",
        max_participants=50,
        may_join=True,
    ).state
    # Migrating to the SFU: the uplinks keep carrying the captions until it completes...
    start = decide(three, NODES, now=T0 + 1, rules=RULES)
    assert start.kind == "start" and not start.captions_change
    sfu = all_ready(on(three, start))
    assert sfu.mode == "sfu"
    # ...then the call's own sessions are transcribed: the uplinks' node is released.
    after = decide(sfu, NODES, now=T0 + 12, rules=RULES)
    assert (after.kind, after.captions_change, after.captions_node_id) == ("nothing", True, None)
    assert sfu.captions_uplinks == ["p-1"]  # kept for a return to P2P
    # An ended call needs nothing.
    ended = sm.end(state, "completed", now=T0 + 20, by=None).state
    assert not decide(ended, NODES, now=T0 + 20, rules=RULES).acts
