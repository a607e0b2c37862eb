"""What media nodes say about this gateway's sessions, delivered to the right socket.

- ``media.slots_changed`` -> ``call:slots {callId, sessionId, version, reason, slots}``,
  each slot ``{index, mid, kind, ssrc, participantId, showingId}``;
- ``media.video_demand_changed`` -> ``call:video-demand {callId, send, receivers}``;
- ``media.leg_state_changed`` -> ``call:sfu-leg {callId, sessionId, leg, state, reason}``;
- ``media.session_closed`` -> ``call:sfu-closed {callId, sessionId, reason}``.

A closed session is forgotten; unless its participant left or another session replaced it,
the coordinator reconciles the call (which opens a new one if the plan still wants it).
"""

from typing import Any

from gateway.delivery import Delivery
from gateway.media.coordinator import MediaCoordinator
from gateway.media.sessions import MediaSessions
from schemas.bus import Incoming
from schemas.media import Slot
from schemas.media_events import (
    AnyMediaEvent,
    LegStateChanged,
    SessionClosed,
    SlotsChanged,
    VideoDemandChanged,
)


def slot_view(slot: Slot) -> dict[str, Any]:
    return {
        "index": slot.index,
        "mid": slot.mid,
        "kind": slot.kind,
        "ssrc": slot.ssrc,
        "participantId": slot.publisher_id,
        "showingId": slot.showing_id,
    }


class NodeEvents:
    """The handler of ``media.evt.<call>.*`` for the calls this gateway serves."""

    def __init__(
        self, delivery: Delivery, sessions: MediaSessions, coordinator: MediaCoordinator
    ) -> None:
        self._delivery = delivery
        self._sessions = sessions
        self._coordinator = coordinator
        self.delivered = 0

    async def __call__(self, event: AnyMediaEvent, _: Incoming) -> None:
        ref = self._sessions.by_session_id(event.session_id)
        if ref is None:
            return  # another gateway's session (or one closed already)
        base = {"callId": event.call_id, "sessionId": event.session_id}
        match event:
            case SlotsChanged():
                name = "call:slots"
                payload = {
                    **base,
                    "version": event.version,
                    "reason": event.reason,
                    "slots": [slot_view(s) for s in event.slots],
                }
            case VideoDemandChanged():
                name = "call:video-demand"
                payload = {**base, "send": event.forwarded, "receivers": event.receivers}
            case LegStateChanged():
                name = "call:sfu-leg"
                payload = {**base, "leg": event.leg, "state": event.state, "reason": event.reason}
            case SessionClosed():
                self._sessions.forget(event.session_id)
                name = "call:sfu-closed"
                payload = {**base, "reason": event.reason}
                if event.reason not in ("left", "replaced"):
                    self._coordinator.request(event.call_id)
            case _:
                return
        if await self._delivery.emit_to_participant(
            event.call_id, event.participant_id, name, payload
        ):
            self.delivered += 1
