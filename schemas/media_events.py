"""What a media node tells the gateways about its sessions, on ``media.evt.<call_id>.<name>``.

Core NATS (not JetStream): these describe live media state, not the call's history. The
gateways holding a call's sockets subscribe to ``media.evt.<call_id>.*`` and deliver each
event to the socket of ``participant_id`` (the session's owner). Every event names the
call, the session and its participant, and the node; decode them with :data:`AnyMediaEvent`.

| name | event | meaning |
|---|---|---|
| ``slots_changed`` | :class:`SlotsChanged` | who is in each slot of a session's downlink |
| ``video_demand`` | :class:`VideoDemandChanged` | pause or resume your camera (who needs it) |
| ``leg_state`` | :class:`LegStateChanged` | an uplink or downlink connected, failed or closed |
| ``session_closed`` | :class:`SessionClosed` | the session ended, and why |

``SlotsChanged.version`` only grows within a session (across downlink replacements too):
a client applies an event only if its version is higher than the last one it applied.
"""

from datetime import datetime
from typing import ClassVar, Literal

import msgspec

from schemas.ids import Id, new_id
from schemas.media import CloseReason, Slot
from schemas.message import Message, utc_now

LegName = Literal["uplink", "downlink"]
LegState = Literal["connecting", "connected", "failed", "closed"]


class MediaEvent(Message, frozen=True, kw_only=True):
    """Fields every media-node event carries."""

    #: The last token of ``media.evt.<call_id>.<name>``.
    subject_name: ClassVar[str] = ""

    call_id: Id
    session_id: Id
    participant_id: Id
    node_id: Id
    event_id: Id = msgspec.field(default_factory=new_id)
    occurred_at: datetime = msgspec.field(default_factory=utc_now)


class SlotsChanged(MediaEvent, frozen=True, kw_only=True, tag="media.slots_changed"):
    """The full slot map of one session's downlink (every slot, filled or not).

    Published when a slot's ``publisher_id`` or ``showing_id`` changes, when a downlink is
    (re)opened, and when a slot was reset after a forwarding fault. ``reason`` says what
    moved it: ``speaker``, ``pinned``, ``joined``, ``left``, ``keyframe`` (a slot started
    showing its new publisher), ``downlink`` (new peer connection), ``reset``.
    """

    subject_name: ClassVar[str] = "slots_changed"

    #: Grows with every map of this session; apply only a version above the last applied.
    version: int
    #: Every slot of the downlink in m-line order, filled or not.
    slots: list[Slot]
    reason: str = ""


class VideoDemandChanged(MediaEvent, frozen=True, kw_only=True, tag="media.video_demand_changed"):
    """Whether anybody receives this publisher's video.

    ``forwarded=False``: nobody has it in a slot (for a few seconds: a short hold-down keeps
    a speaker switching back and forth from flapping); the client should stop sending video
    (``sender.replaceTrack(null)`` or ``encodings[].active = false``) to save its uplink and
    the node's inbound work. ``forwarded=True``: somebody needs it again; the node asks for a
    keyframe as soon as packets arrive. ``receivers`` is how many slots show it.
    """

    subject_name: ClassVar[str] = "video_demand"

    #: True: somebody has this publisher's video in a slot (send it); False: pause it.
    forwarded: bool
    #: How many slots show (or are switching to) this publisher's video.
    receivers: int = 0


class LegStateChanged(MediaEvent, frozen=True, kw_only=True, tag="media.leg_state_changed"):
    """One peer connection of a session changed state.

    ``failed`` (ICE or DTLS failed, or it did not connect within the node's connect
    timeout): the client should ``publish`` / ``open_downlink`` again on the same session.
    """

    subject_name: ClassVar[str] = "leg_state"

    #: ``uplink`` (what the participant publishes) or ``downlink`` (its slots).
    leg: LegName
    state: LegState
    reason: str = ""


class SessionClosed(MediaEvent, frozen=True, kw_only=True, tag="media.session_closed"):
    """The session is gone: its slots were freed everywhere, both legs closed."""

    subject_name: ClassVar[str] = "session_closed"

    reason: CloseReason


AnyMediaEvent = SlotsChanged | VideoDemandChanged | LegStateChanged | SessionClosed
"""Every event a media node publishes on ``media.evt.<call_id>.<name>``."""

MEDIA_EVENT_TYPES: tuple[type[MediaEvent], ...] = (
    SlotsChanged,
    VideoDemandChanged,
    LegStateChanged,
    SessionClosed,
)
