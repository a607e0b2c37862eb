"""Samples of the gateway's catalogue messages (merged into :func:`samples.samples`)."""

import msgspec

from schemas.call_events import (
    CallStatusChanged,
    ParticipantDisconnected,
    ParticipantResumed,
    RingEnded,
)
from schemas.signaling import SocketDelivery


def gateway_samples(call_id: str = "call-1") -> list[msgspec.Struct]:
    return [
        CallStatusChanged(call_id=call_id, from_status="ringing", to_status="active"),
        ParticipantDisconnected(call_id=call_id, participant_id="p-alice", grace_s=15.0),
        ParticipantResumed(call_id=call_id, participant_id="p-alice"),
        RingEnded(call_id=call_id, user_ids=["bob"], outcome="declined"),
        SocketDelivery(
            principal_id="bob",
            event="call:signal",
            payload={"callId": call_id, "from": "p-alice", "type": "offer", "sdp": "v=0\r\n"},
            call_id=call_id,
            participant_id="p-bob",
            sent_at=1.5,
        ),
    ]
