"""What media each participant should have, from the call's state alone (pure): the rows
captions add (which sessions are transcribed, who gets a captions uplink)."""

import msgspec

from gateway import migration
from gateway import state_machine as sm
from gateway.media.plan import SessionWanted, plan, server_transcribes
from gateway.tokens import Principal
from schemas.call_state import CallState, ConversationMember, ConversationRecord

T0 = 1_000_000.0
TIMERS = sm.Timers(
    ring_timeout_s=30, heartbeat_timeout_s=40, reconnect_grace_s=10, max_duration_s=3600
)
_replace = msgspec.structs.replace


def two_people(*, transcription: bool = True) -> CallState:
    conv = ConversationRecord(
        conversation_id="grp",
        type="GROUP",
        members=[ConversationMember(user_id=u) for u in ("a", "b", "c")],
    )
    state = sm.start_call(
        call_id="call-1",
        conversation=conv,
        initiator=Principal("a", "user"),
        participant_id="p-a",
        media="video",
        now=T0,
        timers=TIMERS,
        resume_token="ta",
    ).state
    state = sm.join(
        state,
        Principal("b", "user"),
        participant_id="p-b",
        now=T0,
        resume_token="tb",
        max_participants=50,
        may_join=True,
    ).state
    return _replace(state, transcription=transcription)


def uplinked(state: CallState, node: str | None = "m1") -> CallState:
    """``p-b`` asked for a captions uplink, placed on ``node``."""
    asked = sm.set_captions_uplink(_replace(state, transcription=True), "p-b", True, now=T0)
    assert asked is not None
    return _replace(asked.state, transcription=state.transcription, captions_node_id=node)


def test_p2p_a_captions_uplink_only_for_who_asked_once_placed_and_while_on() -> None:
    state = uplinked(two_people())
    assert plan(state, "p-b").captions == SessionWanted("m1", idle=False, transcription=True)
    assert plan(state, "p-b").session is None  # the video stays P2P
    assert plan(state, "p-a").captions is None
    assert server_transcribes(state, "p-b") and not server_transcribes(state, "p-a")
    assert plan(uplinked(two_people(), node=None), "p-b").captions is None  # not placed yet
    off = uplinked(two_people(transcription=False))
    assert plan(off, "p-b").captions is None and not server_transcribes(off, "p-b")
    ended = sm.end(state, "completed", now=T0 + 1, by=None).state
    assert plan(ended, "p-b").captions is None


def test_call_sessions_are_transcribed_only_on_the_sfu() -> None:
    p2p = uplinked(two_people())
    # Migrating to the SFU: the new sessions do not tap yet (the uplink still does).
    to_sfu = migration.start(
        p2p, to_mode="sfu", reason="participant_count", now=T0, deadline_s=10, node_id="m2"
    ).state
    during = plan(to_sfu, "p-b")
    assert during.session == SessionWanted("m2", idle=False, transcription=False)
    assert during.captions is not None
    # On the SFU: the call sessions tap; no captions uplink any more.
    on_sfu = _replace(to_sfu, mode="sfu", media_node_id="m2", migration=None)
    for pid in ("p-a", "p-b"):
        now = plan(on_sfu, pid)
        assert now.session == SessionWanted("m2", idle=False, transcription=True)
        assert now.captions is None and server_transcribes(on_sfu, pid)
    assert plan(_replace(on_sfu, transcription=False), "p-a").session == SessionWanted(
        "m2", idle=False, transcription=False
    )
    # Back to P2P: the old SFU session keeps tapping until the migration completes.
    back = migration.start(
        on_sfu, to_mode="p2p", reason="participant_count", now=T0 + 5, deadline_s=10
    ).state
    assert plan(back, "p-a").session == SessionWanted("m2", idle=False, transcription=True)
    # A pre-warmed (idle) session never taps.
    warm = _replace(two_people(), prewarm_node_id="m3")
    assert plan(warm, "p-a").session == SessionWanted("m3", idle=True, transcription=False)
