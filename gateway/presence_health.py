"""When this gateway could not handle heartbeats: the time a stale heartbeat must not count.

A stale heartbeat proves a participant gone only if heartbeats could be handled meanwhile.
When the buckets cannot take them (the ``presence`` or ``calls`` bucket electing a new
leader after a node died, or this gateway cut off from its NATS server), every heartbeat
goes stale at once, and a sweeper that believed them would end every call.

So the gateway records its *outages*: from the start of a heartbeat or presence read that
failed for want of the bus, until the next write that went through promptly; and the span
of any such operation that hung longer than :data:`SLOW_S`. The sweeper credits each
participant with the outage time since their last heartbeat (:func:`vouched`), like a lease
that does not run down while its holder cannot renew it. A second's slowness under load
delays a sweep by about that second, not by a whole timeout, and a participant who is
really gone is swept once the time they were silent *while heartbeats could be handled*
passes the timeout.

Only errors that mean "the bus did not answer" are outages: a refusal or a bug is not.
This gateway judges only its own operations; see ``docs/faults.md`` for what that leaves.
"""

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator

import nats.errors
import nats.js.errors

from gateway.errors import CallError
from gateway.state_machine import last_seen
from schemas.call_state import CallState
from schemas.logs import get_logger

log = get_logger("gateway.presence_health")

#: An operation in hand longer than this is the bus not answering (a leaderless bucket's
#: read attempt gives up after 2 s; under load an answer takes well under a second).
SLOW_S = 3.0
#: Outages remembered at most, and for how long (older ones no stale heartbeat can need:
#: a call ends at its maximum duration).
MAX_OUTAGES = 1024
KEEP_S = 6 * 3600.0

#: Errors that mean the bus did not take or answer the operation.
BUS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    TimeoutError,  # nats.errors.TimeoutError is one
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)


def _bus_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, CallError):
        return exc.code == "unavailable"
    return isinstance(exc, BUS_UNAVAILABLE)


class PresenceHealth:
    """This gateway's outages in handling heartbeats and reading presence."""

    def __init__(self, clock: Callable[[], float] = time.time, slow_s: float = SLOW_S):
        self._clock = clock
        self._slow_s = slow_s
        self._in_flight: dict[int, float] = {}  # token -> start, oldest first
        self._tokens = itertools.count()
        self._outages: deque[tuple[float, float]] = deque(maxlen=MAX_OUTAGES)
        self._failing_since: float | None = None

    def started(self) -> int:
        token = next(self._tokens)
        self._in_flight[token] = self._clock()
        return token

    def ended(self, token: int, *, ok: bool, proves: bool = True) -> None:
        """An operation finished. ``ok=False``: the bus did not take it (an outage starts,
        or goes on). ``proves``: a prompt success shows heartbeats are written again (a
        throttled heartbeat, which wrote nothing, does not)."""
        start = self._in_flight.pop(token, None)
        now = self._clock()
        if start is None:
            return
        if not ok:
            if self._failing_since is None:
                log.warning("presence.unavailable")
                self._failing_since = start
            return
        if now - start > self._slow_s:
            self._record(start, now)
        if proves and self._failing_since is not None:
            log.info("presence.available_again", after_s=round(now - self._failing_since, 2))
            self._record(self._failing_since, now)
            self._failing_since = None

    def dropped(self, token: int) -> None:
        """An operation was abandoned (cancelled): only how long it hung says something."""
        start = self._in_flight.pop(token, None)
        now = self._clock()
        if start is not None and now - start > self._slow_s:
            self._record(start, now)

    @contextlib.contextmanager
    def watch(self, *, proves: bool = True) -> Iterator[None]:
        """Watch one operation (see :meth:`ended`)."""
        token = self.started()
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
                self.dropped(token)
            elif _bus_unavailable(exc):
                self.ended(token, ok=False)
            else:
                self.dropped(token)  # an answer, or a bug: not the bus being away
            raise
        else:
            self.ended(token, ok=True, proves=proves)

    def outage_within(self, since: float, until: float) -> float:
        """Seconds of ``[since, until)`` this gateway could not handle heartbeats in."""
        if until <= since:
            return 0.0
        spans = list(self._outages)
        if self._failing_since is not None:
            spans.append((self._failing_since, until))
        oldest = next(iter(self._in_flight.values()), None)
        if oldest is not None and until - oldest > self._slow_s:
            spans.append((oldest, until))
        total, reached = 0.0, since
        for span_start, span_end in sorted(spans):
            start, end = max(span_start, reached), min(span_end, until)
            if end > start:
                total += end - start
                reached = end
        return total

    def _record(self, start: float, end: float) -> None:
        self._outages.append((start, end))
        horizon = end - KEEP_S
        while self._outages and self._outages[0][1] < horizon:
            self._outages.popleft()


def vouched(
    state: CallState, presence: dict[str, float], health: PresenceHealth, now: float
) -> dict[str, float]:
    """Each participant's last sign of life as the sweeper may use it: moved later by the
    time since then in which this gateway could not handle heartbeats."""
    out: dict[str, float] = {}
    for p in state.participants:
        seen = last_seen(p, presence)
        out[p.participant_id] = seen + health.outage_within(seen, now)
    return out
