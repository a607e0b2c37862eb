"""One sample instance of every message in the catalogue (for round-trip tests)."""

from datetime import UTC, datetime

import msgspec

from schemas.call_commands import EndCall, MigrateToP2p, MigrateToSfu, Prewarm
from schemas.call_events import (
    ActiveSpeakerChanged,
    CallEnded,
    CallInitiated,
    CallModeChanged,
    CallRinging,
    CaptionsNodeChanged,
    CaptionsUplinkChanged,
    MediaStateChanged,
    MigrationStarted,
    Participant,
    ParticipantJoined,
    ParticipantLanguageChanged,
    ParticipantLeft,
    ParticipantMediaPath,
    TranscriptionChanged,
)
from schemas.captions import Caption, SegmentTimings, TranscriptSegment
from schemas.dead_letter import DeadLetter
from schemas.heartbeat import ServiceHeartbeat, ServiceLoad
from schemas.media import (
    AnswerDownlink,
    AudioChunk,
    CloseSession,
    DownlinkOffer,
    LeasesRenewed,
    MediaAck,
    MediaNodeHeartbeat,
    OpenDownlink,
    OpenSession,
    Publish,
    RenewLeases,
    SdpAnswer,
    SessionOpened,
    SetPreferences,
    SetTranscription,
    Slot,
)
from schemas.media_events import LegStateChanged, SessionClosed, SlotsChanged, VideoDemandChanged
from schemas.rpc import RpcError
from tests.support.gateway_samples import gateway_samples

ALICE = Participant(participant_id="p-alice", kind="user", user_id="alice", display_name="Alice")
GUEST = Participant(participant_id="p-guest", kind="guest", display_name="Gus", language="fr")


def samples(call_id: str = "call-1") -> list[msgspec.Struct]:
    return [
        CallInitiated(
            call_id=call_id,
            conversation_id="conv-1",
            conversation_type="GROUP",
            initiator=ALICE,
        ),
        CallRinging(call_id=call_id, ringing_user_ids=["bob", "carol"], ring_timeout_s=30),
        ParticipantJoined(call_id=call_id, participant=GUEST, active_count=2),
        ParticipantLeft(call_id=call_id, participant_id="p-guest", reason="left", active_count=1),
        MediaStateChanged(
            call_id=call_id, participant_id="p-alice", audio_enabled=False, video_enabled=True
        ),
        MigrationStarted(
            call_id=call_id,
            seq=7,
            from_mode="p2p",
            to_mode="sfu",
            epoch=2,
            reason="participant_count",
            node_id="media-1",
            deadline_s=5.0,
        ),
        CallModeChanged(
            call_id=call_id,
            seq=8,
            from_mode="p2p",
            to_mode="sfu",
            epoch=2,
            duration_ms=420.5,
            node_id="media-1",
        ),
        TranscriptionChanged(call_id=call_id, seq=9, enabled=True, by_participant_id="p-alice"),
        ParticipantLanguageChanged(
            call_id=call_id, seq=10, participant_id="p-guest", language="fr", caption_language="es"
        ),
        CaptionsUplinkChanged(call_id=call_id, seq=11, participant_id="p-guest", enabled=True),
        CaptionsNodeChanged(call_id=call_id, seq=12, node_id="media-1"),
        CallEnded(call_id=call_id, reason="completed", duration_s=61.2, ended_by="p-alice"),
        TranscriptSegment(
            call_id=call_id,
            utterance_id="u-1",
            participant_id="p-alice",
            language="en",
            text="hello everyone",
            is_final=True,
            confidence=0.91,
            timings=SegmentTimings(vad_wait_ms=300, queue_ms=2, transcription_ms=120),
            model="tiny.en",
        ),
        Caption(
            call_id=call_id,
            utterance_id="u-1",
            speaker_participant_id="p-alice",
            language="es",
            text="hola a todos",
            source_language="en",
            source_text="hello everyone",
            is_final=True,
            translated=True,
            translation_ms=11.5,
        ),
        MigrateToSfu(call_id=call_id, epoch=2, node_id="media-1"),
        MigrateToP2p(call_id=call_id, epoch=3, offerer_id="p-alice", deadline_s=10),
        Prewarm(call_id=call_id, node_id="media-1"),
        ParticipantMediaPath(
            call_id=call_id,
            seq=11,
            participant_id="p-guest",
            epoch=2,
            mode="sfu",
            state="ready",
            max_gap_ms=40.0,
        ),
        EndCall(call_id=call_id, reason="max_duration"),
        ServiceHeartbeat(
            service_id="gw-1",
            kind="gateway",
            version="1.0",
            state="ready",
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
            load=ServiceLoad(in_flight=2, extra={"sockets": 10.0}),
        ),
        DeadLetter(
            original_subject="call.evt.x.y",
            failure="decode",
            reason="bad json",
            payload=b"\x00garbage",
            service_id="gw-1",
            expected_type="CallEvent",
        ),
        RpcError(code="bad_request", message="missing field"),
        ActiveSpeakerChanged(
            call_id=call_id, participant_id="p-alice", previous_participant_id="p-guest"
        ),
        OpenSession(
            call_id=call_id,
            participant_id="p-alice",
            transcription=True,
            lease_s=20,
            video_slots=9,
            audio_slots=3,
        ),
        OpenSession(call_id=call_id, participant_id="p-guest", purpose="captions"),
        Publish(session_id="s-1", sdp="v=0\r\n"),
        OpenDownlink(session_id="s-1"),
        AnswerDownlink(session_id="s-1", sdp="v=0\r\n"),
        SetPreferences(session_id="s-1", pinned=["p-guest"], video_tiles=4),
        SetTranscription(session_id="s-1", enabled=True, language="fr"),
        RenewLeases(session_ids=["s-1", "s-2"]),
        CloseSession(session_id="s-1"),
        SessionOpened(
            session_id="s-1",
            node_id="media-1",
            call_id=call_id,
            participant_id="p-alice",
            video_slots=9,
            audio_slots=3,
        ),
        SdpAnswer(session_id="s-1", sdp="v=0\r\n", audio=True, video=True),
        DownlinkOffer(
            session_id="s-1",
            sdp="v=0\r\n",
            slots=[Slot(index=0, mid="0", kind="video", ssrc=1234, publisher_id="p-guest")],
            version=1,
        ),
        LeasesRenewed(node_id="media-1", renewed=["s-1"], unknown=["s-2"]),
        MediaAck(session_id="s-1"),
        SlotsChanged(
            call_id=call_id,
            session_id="s-1",
            participant_id="p-alice",
            node_id="media-1",
            version=3,
            slots=[
                Slot(
                    index=0,
                    mid="0",
                    kind="video",
                    ssrc=1234,
                    publisher_id="p-guest",
                    showing_id="p-guest",
                ),
                Slot(index=1, mid="1", kind="audio", ssrc=5678),
            ],
            reason="speaker",
        ),
        VideoDemandChanged(
            call_id=call_id,
            session_id="s-2",
            participant_id="p-guest",
            node_id="media-1",
            forwarded=False,
        ),
        LegStateChanged(
            call_id=call_id,
            session_id="s-1",
            participant_id="p-alice",
            node_id="media-1",
            leg="downlink",
            state="connected",
        ),
        SessionClosed(
            call_id=call_id,
            session_id="s-1",
            participant_id="p-alice",
            node_id="media-1",
            reason="lease_expired",
        ),
        MediaNodeHeartbeat(
            node_id="media-1",
            state="ready",
            calls=1,
            participants=3,
            capacity=50,
            free=47,
            published_tracks=6,
            forwarded_streams=12,
            cpu_percent=12.5,
        ),
        AudioChunk(
            call_id=call_id,
            participant_id="p-alice",
            utterance_id="u-1",
            sequence=0,
            is_final=True,
            start_s=1.0,
            end_s=1.5,
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
            speech_end_s=1.4,
            pcm=b"\x00\x01" * 8,
        ),
        *gateway_samples(call_id),
    ]


def idle_node_heartbeat(node_id: str) -> MediaNodeHeartbeat:
    """A ready media node with room and nothing on it (for placement tables in tests)."""
    return MediaNodeHeartbeat(
        node_id=node_id,
        state="ready",
        calls=0,
        participants=0,
        capacity=50,
        free=50,
        published_tracks=0,
        forwarded_streams=0,
        cpu_percent=5,
    )
