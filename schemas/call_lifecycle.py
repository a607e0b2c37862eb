"""Call events beyond the first catalogue: status changes, connection loss, resumption, and
the end of rings. Published on ``call.evt.<call_id>.<name>`` like the others.

:data:`AnyCallLifecycleEvent` is every event a gateway can publish on ``call.evt.>``;
decode the whole stream with it to rebuild the state of any call.
"""

from typing import ClassVar, Literal

from schemas.call_events import AnyCallEvent, CallEvent
from schemas.call_state import CallStatus
from schemas.ids import Id

RingOutcome = Literal["accepted", "declined", "missed", "cancelled"]


class CallStatusChanged(CallEvent, frozen=True, kw_only=True, tag="call.status_changed"):
    """The call moved between states of its state machine (e.g. ringing -> active)."""

    subject_name: ClassVar[str] = "status_changed"

    from_status: CallStatus
    to_status: CallStatus


class ParticipantDisconnected(CallEvent, frozen=True, kw_only=True, tag="participant.disconnected"):
    """A participant's connection was lost; it may resume within ``grace_s`` seconds."""

    subject_name: ClassVar[str] = "participant_disconnected"

    participant_id: Id
    grace_s: float


class ParticipantResumed(CallEvent, frozen=True, kw_only=True, tag="participant.resumed"):
    """A participant reconnected within the grace period and kept its place."""

    subject_name: ClassVar[str] = "participant_resumed"

    participant_id: Id


class RingEnded(CallEvent, frozen=True, kw_only=True, tag="call.ring_ended"):
    """Rings to these members stopped: they answered, declined, missed it, or it was cancelled."""

    subject_name: ClassVar[str] = "ring_ended"

    user_ids: list[Id]
    outcome: RingOutcome


LIFECYCLE_EVENT_TYPES: tuple[type[CallEvent], ...] = (
    CallStatusChanged,
    ParticipantDisconnected,
    ParticipantResumed,
    RingEnded,
)

AnyLifecycleEvent = CallStatusChanged | ParticipantDisconnected | ParticipantResumed | RingEnded
"""The events of this module only (one catalogue family)."""

AnyCallLifecycleEvent = AnyCallEvent | AnyLifecycleEvent
"""Every event on ``call.evt.>`` (the first catalogue plus these)."""
