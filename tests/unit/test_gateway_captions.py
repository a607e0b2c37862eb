"""Captions at the gateway, pure: the transitions and their events, who receives a caption,
revisions, a browser's transcript as a segment, the language codes."""

import msgspec
import pytest

from gateway import state_machine as sm
from gateway.captions.routing import Revisions, caption_payload, reads
from gateway.captions.transcripts import ClientRevisions, client_segment
from gateway.errors import CallError
from gateway.notices import project
from gateway.tokens import Principal
from gateway.validation import check_caption_language, check_spoken_language
from schemas import languages
from schemas.call_events import (
    CaptionsNodeChanged,
    CaptionsUplinkChanged,
    ParticipantJoined,
    ParticipantLanguageChanged,
    TranscriptionChanged,
)
from schemas.call_state import CallState, ConversationMember, ConversationRecord
from schemas.captions import Caption

T0 = 1_000_000.0
TIMERS = sm.Timers(
    ring_timeout_s=30, heartbeat_timeout_s=40, reconnect_grace_s=10, max_duration_s=3600
)
ALICE = Principal("alice", "user", "Alice", "en")
BRUNO = Principal("bruno", "user", "Bruno", "es")
CHLOE = Principal("chloe", "user", "Chloé", "fr")


def group_call() -> CallState:
    """Alice (en) started it; Bruno (es) joined; Chloé (fr) joined reading Spanish."""
    conv = ConversationRecord(
        conversation_id="grp",
        type="GROUP",
        members=[ConversationMember(user_id=u) for u in ("alice", "bruno", "chloe", "dan")],
    )
    state = sm.start_call(
        call_id="call-1",
        conversation=conv,
        initiator=ALICE,
        participant_id="p-a",
        media="video",
        now=T0,
        timers=TIMERS,
        resume_token="ta",
    ).state
    for who, pid, langs in (
        (BRUNO, "p-b", sm.NO_LANGUAGES),
        (CHLOE, "p-c", sm.Languages(caption_language="es")),
    ):
        state = sm.join(
            state,
            who,
            participant_id=pid,
            now=T0 + 1,
            resume_token=f"t-{pid}",
            max_participants=50,
            may_join=True,
            languages=langs,
        ).state
    return state


def caption(language: str, *, speaker: str = "p-a", source: str = "en", rev: int = 0) -> Caption:
    return Caption(
        call_id="call-1",
        utterance_id="u-1",
        speaker_participant_id=speaker,
        language=language,
        text=f"text in {language}",
        source_language=source,
        source_text="hello",
        is_final=True,
        revision=rev,
    )


def test_transcription_on_and_off_is_one_event_and_a_notice_to_everyone() -> None:
    state = group_call()
    out = sm.set_transcription(state, "p-b", True, now=T0 + 2)
    assert out is not None and out.state.transcription
    (event,) = out.events
    assert isinstance(event, TranscriptionChanged)
    assert (event.enabled, event.by_participant_id) == (True, "p-b")
    (notice,) = project(event)
    assert notice.event == "call:transcription-changed" and notice.exclude is None
    assert notice.payload == {"callId": "call-1", "enabled": True, "by": "p-b"}
    assert sm.set_transcription(out.state, "p-a", True, now=T0 + 3) is None  # already on
    with pytest.raises(CallError) as refused:
        sm.set_transcription(state, "p-nobody", True, now=T0)
    assert refused.value.code == "not_in_call"
    ended = sm.end(state, "completed", now=T0 + 4, by=None).state
    with pytest.raises(CallError):
        sm.set_transcription(ended, "p-a", True, now=T0 + 5)


def test_languages_at_join_and_mid_call() -> None:
    state = group_call()
    chloe = sm.find_participant(state, "p-c")
    assert chloe is not None and (chloe.language, chloe.caption_language) == ("fr", "es")
    joined = [
        e.participant
        for e in sm.join(
            state,
            Principal("dan", "user", "Dan", "de"),
            participant_id="p-d",
            now=T0 + 2,
            resume_token="td",
            max_participants=50,
            may_join=True,
            languages=sm.Languages(language="it"),
        ).events
        if isinstance(e, ParticipantJoined)
    ]
    assert [(p.language, p.caption_language) for p in joined] == [("it", None)]

    out = sm.set_language(state, "p-b", sm.Languages(caption_language="fr"), now=T0 + 3)
    assert out is not None
    (event,) = out.events
    assert isinstance(event, ParticipantLanguageChanged)
    assert (event.participant_id, event.language, event.caption_language) == ("p-b", "es", "fr")
    (notice,) = project(event)
    assert notice.event == "call:participant-language"
    assert notice.payload["captionLanguage"] == "fr" and notice.payload["language"] == "es"
    same = sm.set_language(out.state, "p-b", sm.Languages(language="es"), now=T0 + 4)
    assert same is None  # nothing changes: no event
    spoken = sm.set_language(out.state, "p-b", sm.Languages(language="pt"), now=T0 + 5)
    assert spoken is not None
    bruno = sm.find_participant(spoken.state, "p-b")
    assert bruno is not None and (bruno.language, bruno.caption_language) == ("pt", "fr")

    # A rebinding socket (second tab) may bring new languages: the same one event.
    rebound = sm.join(
        state,
        BRUNO,
        participant_id="p-new",
        now=T0 + 6,
        resume_token="tb2",
        max_participants=50,
        may_join=True,
        languages=sm.Languages(caption_language="en"),
    )
    assert rebound.result["participantId"] == "p-b"
    assert [type(e).__name__ for e in rebound.events] == ["ParticipantLanguageChanged"]


def test_a_captions_uplink_wish_needs_transcription_and_leaves_with_its_participant() -> None:
    state = group_call()
    with pytest.raises(CallError) as refused:
        sm.set_captions_uplink(state, "p-b", True, now=T0)
    assert refused.value.code == "conflict"
    on = sm.set_transcription(state, "p-a", True, now=T0)
    assert on is not None
    asked = sm.set_captions_uplink(on.state, "p-b", True, now=T0 + 1)
    assert asked is not None and asked.state.captions_uplinks == ["p-b"]
    (event,) = asked.events
    assert isinstance(event, CaptionsUplinkChanged) and event.enabled
    assert project(event) == []  # the asker is told call:captions-uplink, nobody else
    assert sm.set_captions_uplink(asked.state, "p-b", True, now=T0 + 2) is None
    # Turning transcription off keeps the wish (the node is released, not the wish).
    off = sm.set_transcription(asked.state, "p-a", False, now=T0 + 3)
    assert off is not None and off.state.captions_uplinks == ["p-b"]
    given_up = sm.set_captions_uplink(asked.state, "p-b", False, now=T0 + 3)
    assert given_up is not None and given_up.state.captions_uplinks == []
    left = sm.leave(asked.state, "p-b", "left", now=T0 + 4)
    assert left.state.captions_uplinks == []

    node = sm.set_captions_node(asked.state, "m1")
    assert node is not None and node.state.captions_node_id == "m1"
    (placed,) = node.events
    assert isinstance(placed, CaptionsNodeChanged)
    assert (placed.node_id, placed.previous_node_id) == ("m1", None)
    assert sm.set_captions_node(node.state, "m1") is None


@pytest.mark.parametrize(
    ("participant", "language", "speaker", "source", "gets"),
    [
        ("p-b", "es", "p-a", "en", True),  # Bruno reads what he speaks: Spanish
        ("p-b", "fr", "p-a", "en", False),
        ("p-b", "en", "p-a", "en", False),  # not the original either
        ("p-c", "es", "p-a", "en", True),  # Chloé speaks French, reads Spanish
        ("p-c", "fr", "p-a", "en", False),
        ("p-a", "en", "p-a", "en", True),  # the speaker: their own words
        ("p-a", "es", "p-a", "en", False),  # never a translation of themselves
        ("p-c", "fr", "p-c", "fr", True),  # Chloé speaking: her own French, not Spanish
        ("p-c", "es", "p-c", "fr", False),
        ("p-gone", "es", "p-a", "en", False),
    ],
)
def test_each_participant_receives_only_the_language_it_reads(
    participant: str, language: str, speaker: str, source: str, gets: bool
) -> None:
    state = msgspec.structs.replace(group_call(), transcription=True)
    c = caption(language, speaker=speaker, source=source)
    assert reads(state, participant, c) is gets
    # Transcription off: nobody (a caption in flight when it was turned off).
    assert not reads(msgspec.structs.replace(state, transcription=False), participant, c)


def test_a_caption_goes_out_once_per_revision_never_backwards() -> None:
    revisions = Revisions(size=2)
    assert revisions.claim(caption("es", rev=0))
    assert not revisions.claim(caption("es", rev=0))  # a duplicate
    assert revisions.claim(caption("es", rev=2))
    assert not revisions.claim(caption("es", rev=1))  # late and older
    assert revisions.claim(caption("fr", rev=1))  # each language on its own
    # At one revision the translation replaces the original text, never the reverse.
    untranslated = msgspec.structs.replace(caption("de", rev=4), translated=False)
    translated = msgspec.structs.replace(untranslated, translated=True)
    assert revisions.claim(untranslated) and revisions.claim(translated)
    assert not revisions.claim(untranslated) and not revisions.claim(translated)
    payload = caption_payload(caption("fr", rev=1))
    assert payload["utteranceId"] == "u-1" and payload["revision"] == 1
    assert set(payload) == {
        "callId",
        "utteranceId",
        "speakerParticipantId",
        "language",
        "text",
        "sourceLanguage",
        "sourceText",
        "isFinal",
        "revision",
        "translated",
        "untranslatedReason",
    }
    revisions.forget_call("call-1")
    assert revisions.claim(caption("es", rev=0))


def test_a_browser_transcript_becomes_a_scoped_client_segment() -> None:
    state = group_call()
    speaker = sm.find_participant(state, "p-a")
    assert speaker is not None
    revisions = ClientRevisions()

    def publish(pid: str, revision: int | None, at_s: float) -> tuple[int, float] | None:
        turn = revisions.next("call-1", pid, "u1", revision, at_s)
        if turn is not None:
            revisions.published("call-1", pid, "u1", *turn)
        return turn

    assert publish("p-a", None, 10.0) == (0, 10.0)
    assert publish("p-a", None, 11.0) == (1, 10.0)
    assert publish("p-a", 1, 11.5) is None  # not above the last
    assert publish("p-a", 5, 12.0) == (5, 10.0)
    assert publish("p-b", None, 3.0) == (0, 3.0)  # per participant
    # Not published (its publish failed): the same revision may be sent again.
    assert revisions.next("call-1", "p-a", "u1", 6, 13.0) == (6, 10.0)
    assert revisions.next("call-1", "p-a", "u1", 6, 13.5) == (6, 10.0)
    segment = client_segment(
        call_id="call-1",
        speaker=speaker,
        utterance_id="u1",
        text="hello there",
        is_final=True,
        revision=5,
        language="en",
        started_s=10.0,
        now=T0 + 12.5,
    )
    assert segment.utterance_id == "p-a-u1" and segment.participant_id == "p-a"
    assert (segment.source, segment.model, segment.revision) == ("client", "browser", 5)
    assert (segment.start_s, segment.end_s) == (10.0, 12.5)
    assert segment.speech_ended_at.timestamp() == pytest.approx(T0 + 12.5)


def test_language_codes_are_checked_against_what_can_be_transcribed_and_read() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert frozenset(_LANGUAGE_CODES) == languages.SPOKEN  # the list follows Whisper's
    assert check_spoken_language(" PT_br ") == "pt-br"
    assert check_caption_language("eo") == "eo"  # read (Apertium), never transcribed
    for bad, check in (
        ("eo", check_spoken_language),
        ("xx", check_caption_language),
        ("english", check_spoken_language),
        ("", check_caption_language),
    ):
        with pytest.raises(CallError) as refused:
            check(bad)
        assert refused.value.code == "bad_request"
        assert not bad or bad not in refused.value.message  # never echoes the value


async def test_a_browser_transcript_whose_publish_failed_can_be_sent_again() -> None:
    """The revision is recorded once the segment is out, not before: the retry the
    ``unavailable`` refusal asks for is published, not dropped as stale."""
    from typing import cast

    from gateway.calls import CallService
    from gateway.captions.router import CaptionRouter
    from gateway.delivery import SocketSession
    from gateway.media.sessions import MediaSessions
    from gateway.settings import GatewaySettings
    from gateway.sockets.captions import CaptionSignaling
    from schemas.captions import TranscriptSegment

    state = msgspec.structs.replace(group_call(), transcription=True)

    class Calls:
        async def current(self, call_id: str, fresh: bool = False) -> CallState:
            return state

    sent: list[TranscriptSegment] = []
    failures = [ConnectionError("no NATS")]

    async def publish(segment: TranscriptSegment) -> None:
        if failures:
            raise failures.pop()
        sent.append(segment)

    signaling = CaptionSignaling(
        GatewaySettings.from_env({}),
        cast(CallService, Calls()),
        cast(MediaSessions, None),
        cast(CaptionRouter, None),
        publish,
    )
    session = SocketSession(sid="s1", principal_id="alice", call_id="call-1", participant_id="p-a")
    said = {"callId": "call-1", "utteranceId": "u1", "text": "hello", "isFinal": True}
    with pytest.raises(CallError) as refused:
        await signaling.transcription(session, ALICE, {**said, "revision": 3})
    assert refused.value.code == "unavailable" and not sent
    again = await signaling.transcription(session, ALICE, {**said, "revision": 3})
    assert again["published"] is True and [s.revision for s in sent] == [3]
    stale = await signaling.transcription(session, ALICE, {**said, "revision": 3})
    assert stale["published"] is False and len(sent) == 1
