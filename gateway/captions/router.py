"""Delivers each caption of a call to this gateway's sockets that read it.

A per-call subscription to ``caption.<call>.*`` (a :class:`gateway.call_feeds.Feed`,
present while the call has a socket here) hands every caption to :class:`CaptionRouter`,
which picks the recipients from the call's live state (:func:`.routing.reads`) and emits
``call:caption`` to each. The state comes from the gateway's KV mirror, or from a change
this gateway itself just wrote when that is newer (:meth:`CaptionRouter.note`): a
participant who changes language reads the new one from its next caption on, without
waiting for the mirror to catch up.
"""

from collections import OrderedDict
from collections.abc import Callable

from gateway.captions.routing import Revisions, caption_payload, reads
from gateway.delivery import Delivery
from schemas.bus import Incoming
from schemas.call_state import CallState
from schemas.captions import Caption
from schemas.logs import get_logger

log = get_logger("gateway.captions")

StateOf = Callable[[str], CallState | None]

#: Calls whose last locally written state is kept (oldest forgotten first).
_NOTED = 10_000


class CaptionRouter:
    """The handler of ``caption.<call>.*`` for the calls this gateway serves."""

    def __init__(self, delivery: Delivery, state_of: StateOf) -> None:
        self._delivery = delivery
        self._state_of = state_of
        self._noted: OrderedDict[str, CallState] = OrderedDict()
        self.revisions = Revisions()
        self.received = 0
        self.delivered = 0
        self.stale = 0
        self.unrouted = 0

    def note(self, state: CallState) -> None:
        """A state of the call this gateway just wrote (used while the mirror is older)."""
        self._noted[state.call_id] = state
        self._noted.move_to_end(state.call_id)
        while len(self._noted) > _NOTED:
            self._noted.popitem(last=False)
        if state.status == "ended":
            self._noted.pop(state.call_id, None)
            self.revisions.forget_call(state.call_id)

    def state(self, call_id: str) -> CallState | None:
        mirrored = self._state_of(call_id)
        noted = self._noted.get(call_id)
        if noted is None:
            return mirrored
        if mirrored is None or mirrored.seq < noted.seq:
            return noted
        del self._noted[call_id]  # the mirror caught up
        return mirrored

    async def __call__(self, caption: Caption, _: Incoming) -> None:
        self.received += 1
        state = self.state(caption.call_id)
        sockets = self._delivery.sessions_in(caption.call_id)
        if state is None or not sockets:
            self.unrouted += 1
            return
        if not self.revisions.claim(caption):
            self.stale += 1
            return
        payload = caption_payload(caption)
        for socket in sockets:
            pid = socket.participant_id
            if not (pid is not None and reads(state, pid, caption)):
                continue
            if await self._delivery.emit_to_participant(
                caption.call_id, pid, "call:caption", payload
            ):
                self.delivered += 1
