"""Socket notices projected from events (pure): who sees what."""

from gateway.notices import project
from schemas.call_events import (
    CallEnded,
    Participant,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantResumed,
    RingEnded,
)

BOB = Participant(participant_id="p-b", kind="user", user_id="bob", display_name="Bob")


def test_an_answered_ring_tells_the_others_accepted_then_joined() -> None:
    notices = project(
        ParticipantJoined(call_id="c", participant=BOB, active_count=2, answered_ring=True)
    )
    assert [n.event for n in notices] == ["call:accepted", "call:participant-joined"]
    assert {n.exclude for n in notices} == {"p-b"}
    assert notices[0].payload["callee"] == {"userId": "bob", "displayName": "Bob"}


def test_rings_end_for_the_people_rung() -> None:
    declined = project(RingEnded(call_id="c", user_ids=["bob"], outcome="declined"))
    assert [(n.event, n.users) for n in declined] == [
        ("call:ring-stopped", ("bob",)),
        ("call:declined", ()),
    ]
    assert declined[1].payload == {"callId": "c", "userId": "bob"}
    missed = project(RingEnded(call_id="c", user_ids=["bob", "carol"], outcome="missed"))
    assert [(n.event, n.users) for n in missed] == [("call:missed", ("bob", "carol"))]
    cancelled = project(RingEnded(call_id="c", user_ids=["bob"], outcome="cancelled"))
    assert cancelled[0].payload["outcome"] == "cancelled"


def test_a_removed_person_hears_it_the_end_is_said_once() -> None:
    removed = project(
        ParticipantLeft(call_id="c", participant_id="p-b", reason="removed", active_count=2)
    )
    assert removed[0].exclude is None and removed[0].payload["reason"] == "removed"
    assert (
        project(
            ParticipantLeft(call_id="c", participant_id="p-b", reason="call_ended", active_count=0)
        )
        == []
    )
    ended = project(CallEnded(call_id="c", reason="completed", duration_s=3.0, ended_by="p-a"))
    assert [n.event for n in ended] == ["call:ended"] and ended[0].payload["endedBy"] == "p-a"


def test_a_resumed_participant_keeps_its_mute_on_everyone_s_screen() -> None:
    muted = project(
        ParticipantResumed(
            call_id="c",
            participant_id="p-b",
            participant=BOB,
            audio_enabled=False,
            video_enabled=True,
        )
    )
    assert [(n.event, n.exclude) for n in muted] == [("call:participant-resumed", "p-b")]
    view = muted[0].payload["participant"]
    assert (view["audioEnabled"], view["videoEnabled"]) == (False, True)
    # An event written before the fields existed says nothing about media (not "on").
    older = project(ParticipantResumed(call_id="c", participant_id="p-b", participant=BOB))
    assert "audioEnabled" not in older[0].payload["participant"]
