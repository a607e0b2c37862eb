"""The outbox, pure: a change's events get the call's next revisions, derived ids, one time."""

import msgspec
import pytest

from gateway import state_machine as sm
from gateway.outbox import MAX_OUTBOX, OutboxFull, event_id, stamp, without
from gateway.tokens import Principal
from schemas.call_commands import MigrateToSfu
from schemas.call_events import AnyCallEvent
from schemas.call_state import CallState, ConversationMember, ConversationRecord
from schemas.codec import decode

T0 = 1_000_000.0
TIMERS = sm.Timers(
    ring_timeout_s=30, heartbeat_timeout_s=40, reconnect_grace_s=10, max_duration_s=60
)


def _started() -> sm.Outcome:
    return sm.start_call(
        call_id="call-1",
        conversation=ConversationRecord(
            conversation_id="c",
            type="GROUP",
            members=[ConversationMember(user_id=u) for u in ("a", "b")],
        ),
        initiator=Principal("a", "user"),
        participant_id="p-a",
        media="video",
        now=T0,
        timers=TIMERS,
        resume_token="t",
    )


def test_events_get_consecutive_revisions_and_derived_ids() -> None:
    out = _started()
    state, events = stamp(out.state, out.events, [], base=out.state, now=T0)
    assert [e.seq for e in events] == [1, 2, 3, 4] and state.seq == 4
    assert [e.event_id for e in events] == [event_id("call-1", n) for n in (1, 2, 3, 4)]
    assert {e.occurred_at.timestamp() for e in events} == {T0}
    assert [entry.seq for entry in state.outbox] == [1, 2, 3, 4]
    # What the outbox holds is exactly what is published.
    first: AnyCallEvent = decode(bytes(state.outbox[0].data), AnyCallEvent)
    assert first == events[0]
    assert state.outbox[0].subject == "call.evt.call-1.initiated"

    # The next change continues from the state's revision, after what is still pending.
    bob = sm.join(
        state,
        Principal("b", "user"),
        participant_id="p-b",
        now=T0 + 1,
        resume_token="u",
        max_participants=50,
        may_join=True,
    )
    after, more = stamp(bob.state, bob.events, [], base=state, now=T0 + 1)
    assert [e.seq for e in more] == list(range(5, 5 + len(more)))
    assert [e.seq for e in after.outbox] == list(range(1, 5 + len(more)))


def test_commands_ride_in_the_outbox_after_the_events_of_their_change() -> None:
    out = _started()
    command = MigrateToSfu(call_id="call-1", epoch=1, node_id="media-1")
    state, _ = stamp(out.state, out.events, [command], base=out.state, now=T0)
    last = state.outbox[-1]
    assert last.kind == "command" and last.seq == 4
    assert last.subject == "call.cmd.call-1.migrate_to_sfu"
    assert last.message_id == command.command_id


def test_a_full_outbox_refuses_the_change_instead_of_dropping_events() -> None:
    out = _started()
    state, _ = stamp(out.state, out.events, [], base=out.state, now=T0)
    full: CallState = msgspec.structs.replace(state, outbox=state.outbox * (MAX_OUTBOX // 4))
    with pytest.raises(OutboxFull):
        stamp(full, out.events[:1], [], base=full, now=T0)
    assert without(state.outbox, {state.outbox[0].message_id}) == state.outbox[1:]
