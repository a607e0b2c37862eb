"""One sample instance of every message in the catalogue (for round-trip tests)."""

from datetime import UTC, datetime

import msgspec

from schemas.call_commands import EndCall, MigrateToP2p, MigrateToSfu
from schemas.call_events import (
    CallEnded,
    CallInitiated,
    CallModeChanged,
    CallRinging,
    MediaStateChanged,
    Participant,
    ParticipantJoined,
    ParticipantLeft,
)
from schemas.dead_letter import DeadLetter
from schemas.heartbeat import ServiceHeartbeat, ServiceLoad
from schemas.rpc import RpcError

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
        CallModeChanged(
            call_id=call_id, from_mode="p2p", to_mode="sfu", epoch=2, duration_ms=420.5
        ),
        CallEnded(call_id=call_id, reason="completed", duration_s=61.2, ended_by="p-alice"),
        MigrateToSfu(call_id=call_id, epoch=2, node_id="media-1"),
        MigrateToP2p(call_id=call_id, epoch=3),
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
    ]
