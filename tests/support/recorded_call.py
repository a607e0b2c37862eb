"""A recorded GROUP call, event by event, as the gateway and the media side would publish it.

alice calls bob, carol and dave; bob answers; a guest joins by link, which moves the call to
the SFU; captions flow; carol and dave miss it; the guest leaves, the call goes back to P2P;
everyone leaves. Revisions (``seq``) run 1..N with no gap; the active-speaker events are
advisory (``seq`` 0).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas.call_events import (
    ActiveSpeakerChanged,
    AnyCallEvent,
    CallEnded,
    CallInitiated,
    CallModeChanged,
    CallRinging,
    CallStatusChanged,
    MediaStateChanged,
    MigrationStarted,
    Participant,
    ParticipantDisconnected,
    ParticipantJoined,
    ParticipantLanguageChanged,
    ParticipantLeft,
    ParticipantResumed,
    RingEnded,
    TranscriptionChanged,
)
from schemas.captions import Caption, TranscriptSegment

T0 = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class RecordedCall:
    call_id: str
    conversation_id: str
    alice: str
    bob: str
    carol: str
    dave: str
    guest: str
    events: list[AnyCallEvent]
    segments: list[TranscriptSegment]
    captions: list[Caption]

    @property
    def revised(self) -> list[AnyCallEvent]:
        return [e for e in self.events if e.seq > 0]


def recorded_call(uid: str, start: datetime = T0) -> RecordedCall:
    call, conv = f"call-{uid}", f"grp-{uid}"
    alice, bob, carol, dave, guest = (f"{n}-{uid}" for n in ("alice", "bob", "carol", "dave", "g"))
    pa = Participant(
        participant_id=f"pa-{uid}",
        kind="user",
        user_id=alice,
        principal_id=alice,
        display_name="Alice",
    )
    pb = Participant(
        participant_id=f"pb-{uid}",
        kind="user",
        user_id=bob,
        principal_id=bob,
        display_name="Bob",
        language="fr",
    )
    pg = Participant(
        participant_id=f"pg-{uid}",
        kind="guest",
        principal_id=guest,
        display_name="Gus",
        language="pt-br",
    )
    clock = iter(range(1000))

    def at() -> datetime:
        return start + timedelta(seconds=next(clock))

    seq = iter(range(1, 1000))
    e: list[AnyCallEvent] = []

    def add(event: AnyCallEvent) -> None:
        e.append(event)

    add(
        CallInitiated(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            conversation_id=conv,
            conversation_type="GROUP",
            initiator=pa,
        )
    )
    add(
        ParticipantJoined(
            call_id=call, seq=next(seq), occurred_at=at(), participant=pa, active_count=1
        )
    )
    add(
        CallStatusChanged(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            from_status="initiated",
            to_status="ringing",
        )
    )
    add(
        CallRinging(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            ringing_user_ids=[bob, carol, dave],
            ring_timeout_s=30,
        )
    )
    add(
        ParticipantJoined(
            call_id=call, seq=next(seq), occurred_at=at(), participant=pb, active_count=2
        )
    )
    add(
        RingEnded(call_id=call, seq=next(seq), occurred_at=at(), user_ids=[bob], outcome="accepted")
    )
    add(
        CallStatusChanged(
            call_id=call, seq=next(seq), occurred_at=at(), from_status="ringing", to_status="active"
        )
    )
    add(
        TranscriptionChanged(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            enabled=True,
            by_participant_id=pa.participant_id,
        )
    )
    add(
        ParticipantJoined(
            call_id=call, seq=next(seq), occurred_at=at(), participant=pg, active_count=3
        )
    )
    add(
        MigrationStarted(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            from_mode="p2p",
            to_mode="sfu",
            epoch=1,
            reason="participant_count",
            node_id="mn-1",
            deadline_s=5,
        )
    )
    add(
        CallModeChanged(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            from_mode="p2p",
            to_mode="sfu",
            epoch=1,
            duration_ms=420.0,
            max_gap_ms=35.0,
            node_id="mn-1",
        )
    )
    add(
        ActiveSpeakerChanged(
            call_id=call,
            occurred_at=at(),
            participant_id=pb.participant_id,
            level_dbov=-20,
            node_id="mn-1",
        )
    )
    add(
        MediaStateChanged(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            participant_id=pb.participant_id,
            audio_enabled=False,
            video_enabled=True,
        )
    )
    add(
        ParticipantLanguageChanged(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            participant_id=pg.participant_id,
            language="pt-br",
            caption_language="en",
        )
    )
    add(
        RingEnded(
            call_id=call, seq=next(seq), occurred_at=at(), user_ids=[carol, dave], outcome="missed"
        )
    )
    add(
        ParticipantDisconnected(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            participant_id=pb.participant_id,
            grace_s=15,
        )
    )
    add(
        ParticipantResumed(
            call_id=call, seq=next(seq), occurred_at=at(), participant_id=pb.participant_id
        )
    )
    add(
        ParticipantLeft(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            participant_id=pg.participant_id,
            reason="left",
            active_count=2,
        )
    )
    add(
        MigrationStarted(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            from_mode="sfu",
            to_mode="p2p",
            epoch=2,
            reason="participant_count",
        )
    )
    add(
        CallModeChanged(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            from_mode="sfu",
            to_mode="p2p",
            epoch=2,
            duration_ms=610.0,
        )
    )
    add(
        ActiveSpeakerChanged(
            call_id=call,
            occurred_at=at(),
            participant_id=None,
            previous_participant_id=pb.participant_id,
        )
    )
    add(
        ParticipantLeft(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            participant_id=pb.participant_id,
            reason="call_ended",
            active_count=0,
        )
    )
    add(
        ParticipantLeft(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            participant_id=pa.participant_id,
            reason="call_ended",
            active_count=0,
        )
    )
    add(
        CallStatusChanged(
            call_id=call, seq=next(seq), occurred_at=at(), from_status="active", to_status="ended"
        )
    )
    add(
        CallEnded(
            call_id=call,
            seq=next(seq),
            occurred_at=at(),
            reason="completed",
            duration_s=17.0,
            ended_by=pa.participant_id,
        )
    )

    spoken = start + timedelta(seconds=12)
    segments = [
        TranscriptSegment(
            call_id=call,
            utterance_id=f"u1-{uid}",
            participant_id=pa.participant_id,
            language="en",
            text="hello every",
            is_final=False,
            revision=0,
            speech_ended_at=spoken,
            produced_at=spoken,
        ),
        TranscriptSegment(
            call_id=call,
            utterance_id=f"u1-{uid}",
            participant_id=pa.participant_id,
            language="en",
            text="Hello everyone.",
            is_final=True,
            revision=1,
            start_s=1.0,
            end_s=2.5,
            confidence=0.9,
            model="tiny.en",
            speech_ended_at=spoken,
            produced_at=spoken + timedelta(milliseconds=700),
        ),
        TranscriptSegment(
            call_id=call,
            utterance_id=f"u2-{uid}",
            participant_id=pb.participant_id,
            language="fr",
            text="Bonjour à tous.",
            is_final=True,
            revision=0,
            source="client",
            speech_ended_at=spoken + timedelta(seconds=3),
            produced_at=spoken + timedelta(seconds=3.2),
        ),
    ]
    captions = [
        Caption(
            call_id=call,
            utterance_id=f"u1-{uid}",
            speaker_participant_id=pa.participant_id,
            language="fr",
            text="Bonjour à tous.",
            source_language="en",
            source_text="Hello everyone.",
            is_final=True,
            revision=1,
            translated=True,
            speech_ended_at=spoken,
            translation_ms=80,
            produced_at=spoken + timedelta(milliseconds=800),
        ),
        Caption(
            call_id=call,
            utterance_id=f"u1-{uid}",
            speaker_participant_id=pa.participant_id,
            language="en",
            text="Hello everyone.",
            source_language="en",
            source_text="Hello everyone.",
            is_final=True,
            revision=1,
            untranslated_reason="same_language",
            speech_ended_at=spoken,
            produced_at=spoken + timedelta(milliseconds=720),
        ),
        Caption(
            call_id=call,
            utterance_id=f"u2-{uid}",
            speaker_participant_id=pb.participant_id,
            language="en",
            text="Hello everyone.",
            source_language="fr",
            source_text="Bonjour à tous.",
            is_final=True,
            translated=True,
            speech_ended_at=spoken + timedelta(seconds=3),
            translation_ms=95,
            produced_at=spoken + timedelta(seconds=3.4),
        ),
    ]
    return RecordedCall(call, conv, alice, bob, carol, dave, guest, e, segments, captions)
