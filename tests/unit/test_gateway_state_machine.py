"""The call state machine, pure: transitions, timers, the events each emits, and the
socket notices every gateway projects from those events."""

import itertools

import pytest

from gateway import state_machine as sm
from gateway.errors import CallError
from gateway.notices import Notice, project
from gateway.tokens import Principal
from schemas.call_events import ParticipantResumed
from schemas.call_state import CallState, ConversationMember, ConversationRecord

T0 = 1_000_000.0
TIMERS = sm.Timers(
    ring_timeout_s=30, heartbeat_timeout_s=40, reconnect_grace_s=10, max_duration_s=3600
)
ALICE = Principal("alice", "user", "Alice", "en")
BOB = Principal("bob", "user", "Bob", "fr")
CAROL = Principal("carol", "user", "Carol", "es")
GUEST = Principal("guest-1", "guest", "Gus", "de", conversation_id="grp")


def conversation(kind: str, *users: str) -> ConversationRecord:
    return ConversationRecord(
        conversation_id="grp" if kind == "GROUP" else "dm",
        type=kind,  # type: ignore[arg-type]
        members=[ConversationMember(user_id=u) for u in users],
    )


_ids = itertools.count(1)


def pid() -> str:
    return f"p-{next(_ids)}"


def start(kind: str = "DIRECT", *users: str) -> CallState:
    users = users or ("alice", "bob")
    out = sm.start_call(
        call_id="call-1",
        conversation=conversation(kind, *users),
        initiator=ALICE,
        participant_id=pid(),
        media="video",
        now=T0,
        timers=TIMERS,
        resume_token="tok-alice",
    )
    return out.state


def join(state: CallState, who: Principal, now: float = T0 + 1, token: str = "tok") -> sm.Outcome:
    return sm.join(
        state,
        who,
        participant_id=pid(),
        now=now,
        resume_token=token,
        max_participants=50,
        may_join=True,
    )


def names(out: sm.Outcome) -> list[str]:
    return [type(e).__name__ for e in out.events]


def notices(out: sm.Outcome) -> list[Notice]:
    return [n for e in out.events for n in project(e)]  # type: ignore[arg-type]


def received_by(out: sm.Outcome, state: CallState, principal: str) -> list[str]:
    """The notices one person's sockets get (as a ringing user or a bound participant)."""
    me = sm.participant_of(state, principal)
    got = []
    for n in notices(out):
        if n.users:
            if principal in n.users:
                got.append(n.event)
        elif (
            me is not None
            and n.exclude != me.participant_id
            and n.only in (None, me.participant_id)
        ):
            got.append(n.event)
    return got


def test_start_rings_the_other_members_and_publishes_the_story() -> None:
    out = sm.start_call(
        call_id="call-1",
        conversation=conversation("GROUP", "alice", "bob", "carol"),
        initiator=ALICE,
        participant_id="p-alice",
        media="audio",
        now=T0,
        timers=TIMERS,
        resume_token="t",
    )
    assert out.state.status == "ringing" and out.state.ring_deadline_at == T0 + 30
    assert names(out) == ["CallInitiated", "ParticipantJoined", "CallStatusChanged", "CallRinging"]
    incoming = [n for n in notices(out) if n.event == "call:incoming"]
    assert len(incoming) == 1 and set(incoming[0].users) == {"bob", "carol"}
    assert incoming[0].payload["caller"] == {"userId": "alice", "displayName": "Alice"}
    assert incoming[0].payload["conversationType"] == "GROUP"


def test_accept_makes_the_call_active_and_tells_the_caller() -> None:
    out = join(start(), BOB)
    assert out.state.status == "active" and out.state.started_at == T0 + 1
    assert out.state.ring_deadline_at is None
    assert names(out) == ["ParticipantJoined", "RingEnded", "CallStatusChanged"]
    assert received_by(out, out.state, "alice") == ["call:accepted", "call:participant-joined"]
    assert received_by(out, out.state, "bob") == ["call:ring-stopped"]
    assert out.result["accepted"] is True


def test_direct_decline_ends_the_call_group_decline_does_not() -> None:
    out = sm.decline(start(), "bob", now=T0 + 2)
    assert out.state.status == "ended" and out.state.end_reason == "declined"
    group = start("GROUP", "alice", "bob", "carol")
    out = sm.decline(group, "bob", now=T0 + 2)
    assert out.state.status == "ringing"
    assert {i.user_id: i.status for i in out.state.invitees} == {
        "bob": "declined",
        "carol": "ringing",
    }
    # When every ring is declined before anyone answered, the call ends as declined.
    out = sm.decline(out.state, "carol", now=T0 + 3)
    assert out.state.status == "ended" and out.state.end_reason == "declined"


def test_ring_timeout_misses_the_call_exactly_once() -> None:
    state = start()
    assert sm.apply_due(state, now=T0 + 29.9) is None
    out = sm.apply_due(state, now=T0 + 30)
    assert out is not None and out.state.end_reason == "missed"
    assert received_by(out, state, "bob") == ["call:missed"]
    assert names(out).count("CallEnded") == 1
    assert sm.apply_due(out.state, now=T0 + 31) is None  # a second sweeper finds nothing


def test_group_ring_timeout_only_misses_the_silent_ones() -> None:
    state = join(start("GROUP", "alice", "bob", "carol"), BOB).state
    assert state.ring_deadline_at == T0 + 30  # carol is still being rung
    out = sm.apply_due(state, now=T0 + 30)
    assert out is not None and out.state.status == "active"
    assert {i.user_id: i.status for i in out.state.invitees} == {
        "bob": "accepted",
        "carol": "missed",
    }
    assert out.state.ring_deadline_at is None


def test_group_call_ends_with_the_last_leave() -> None:
    state = join(start("GROUP", "alice", "bob", "carol"), BOB).state
    alice = sm.participant_of(state, "alice")
    assert alice is not None
    out = sm.leave(state, alice.participant_id, "left", now=T0 + 5)
    assert out.state.status == "active" and len(out.state.participants) == 1
    bob = sm.participant_of(out.state, "bob")
    assert bob is not None
    out = sm.leave(out.state, bob.participant_id, "left", now=T0 + 6)
    assert out.state.status == "ended" and out.state.end_reason == "completed"
    assert out.state.ended_at == T0 + 6


def test_disconnect_grace_resume_keeps_everything() -> None:
    state = join(start(), BOB, token="tok-bob").state
    bob = sm.participant_of(state, "bob")
    assert bob is not None
    state = sm.set_media(state, bob.participant_id, audio=False, now=T0 + 2).state  # type: ignore[union-attr]
    out = sm.disconnect(state, bob.participant_id, now=T0 + 3)
    assert out is not None and out.state.status == "reconnecting"
    assert sm.apply_due(out.state, now=T0 + 12.9) is None
    resumed = sm.resume(out.state, "tok-bob", now=T0 + 12, new_token="tok-bob-2")
    again = sm.participant_of(resumed.state, "bob")
    assert again is not None and again.participant_id == bob.participant_id
    assert again.audio_enabled is False and again.language == "fr"
    assert resumed.state.status == "active"
    assert names(resumed) == ["ParticipantResumed", "CallStatusChanged"]
    event = resumed.events[0]
    assert isinstance(event, ParticipantResumed)
    assert (event.audio_enabled, event.video_enabled) == (False, True)  # what Bob kept
    with pytest.raises(CallError):
        sm.resume(resumed.state, "tok-bob", now=T0 + 13, new_token="x")  # the old token is spent


def test_grace_expiry_and_heartbeat_loss_end_a_direct_call() -> None:
    state = join(start(), BOB).state
    bob = sm.participant_of(state, "bob")
    assert bob is not None
    lost = sm.disconnect(state, bob.participant_id, now=T0 + 3)
    assert lost is not None
    out = sm.apply_due(lost.state, now=T0 + 13)
    assert out is not None and out.state.end_reason == "connection_lost"
    # Nobody disconnected, but alice went silent (her gateway died); bob's heartbeats,
    # kept apart from the call's state, keep him in.
    beats = {bob.participant_id: T0 + 15}
    assert sm.next_deadline(state, beats) == T0 + 40
    out = sm.apply_due(state, now=T0 + 40.5, presence=beats)
    assert out is not None and out.state.end_reason == "heartbeat_timeout"
    left = [e for e in out.events if type(e).__name__ == "ParticipantLeft"]
    assert left[0].participant_id != bob.participant_id  # type: ignore[attr-defined]


def test_max_duration_ends_the_call() -> None:
    state = join(start(), BOB).state
    beats = {p.participant_id: T0 + 3599 for p in state.participants}
    assert sm.apply_due(state, now=T0 + 3599.5, presence=beats) is None
    out = sm.apply_due(state, now=T0 + 3600, presence=beats)
    assert out is not None and out.state.end_reason == "max_duration"
    assert {n.event for n in notices(out)} == {"call:ended"}


def test_rules_on_who_may_enter() -> None:
    state = join(start(), BOB).state
    with pytest.raises(CallError) as full:
        join(state, CAROL)
    assert full.value.code == "conflict"
    with pytest.raises(CallError) as guest:
        join(start(), GUEST)
    assert guest.value.code == "forbidden"
    with pytest.raises(CallError) as stranger:
        sm.join(
            start(),
            CAROL,
            participant_id=pid(),
            now=T0,
            resume_token="t",
            max_participants=50,
            may_join=False,
        )
    assert stranger.value.code == "forbidden"
    ended = sm.end(state, "completed", now=T0 + 9, by=None).state
    with pytest.raises(CallError) as over:
        join(ended, CAROL)
    assert over.value.code == "call_ended"


def test_a_second_socket_of_the_same_person_rebinds_instead_of_duplicating() -> None:
    state = join(start("GROUP", "alice", "bob"), BOB).state
    out = join(state, BOB, token="other-tab")
    assert out.result["rebound"] is True and len(out.state.participants) == 2
    assert out.events == []


def test_media_toggle_is_an_event_and_a_notice_to_the_others() -> None:
    state = join(start(), BOB).state
    alice = sm.participant_of(state, "alice")
    assert alice is not None
    out = sm.set_media(state, alice.participant_id, video=False, now=T0 + 2)
    assert out is not None and names(out) == ["MediaStateChanged"]
    assert received_by(out, state, "bob") == ["call:media-toggled"]
    assert received_by(out, state, "alice") == []
    assert sm.set_media(out.state, alice.participant_id, video=False, now=T0 + 3) is None


def test_a_profile_language_nobody_can_transcribe_is_read_not_spoken() -> None:
    """A token's ``eo`` (Apertium writes it, Whisper does not hear it) would dead-letter
    every chunk: the newcomer reads it and speaks the default until it says otherwise."""
    state = start("GROUP", "alice", "bob", "eve", "xavi", "yann")
    out = join(state, Principal("eve", "user", "Eve", "eo"))
    eve = next(p for p in out.state.participants if p.principal_id == "eve")
    assert (eve.language, eve.caption_language) == (sm.SPOKEN_DEFAULT, "eo")
    # A code nobody knows at all: the default, reading what it speaks.
    out = join(out.state, Principal("xavi", "user", "Xavi", "xx"))
    xavi = next(p for p in out.state.participants if p.principal_id == "xavi")
    assert (xavi.language, xavi.caption_language) == ("en", None)
    # What the newcomer asks for wins; a spoken profile language is kept as it was.
    asked = sm.join(
        out.state,
        Principal("yann", "user", "Yann", "ast"),
        participant_id=pid(),
        now=T0 + 2,
        resume_token="tok",
        max_participants=50,
        may_join=True,
        languages=sm.Languages(language="es"),
    )
    yann = next(p for p in asked.state.participants if p.principal_id == "yann")
    assert (yann.language, yann.caption_language) == ("es", None)
    alice = next(p for p in asked.state.participants if p.principal_id == "alice")
    assert (alice.language, alice.caption_language) == ("en", None)
