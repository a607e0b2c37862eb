"""Participants' heartbeats, kept apart from the call's state (KV ``presence``).

A heartbeat is a plain put of :class:`~schemas.call_state.Presence` (no compare-and-set,
no event), throttled so a participant writes at most once per tenth of its call's heartbeat
timeout. The sweepers read presence only for calls whose heartbeat deadline seems to have
passed by the call's own state, cache what they read, and read again when that runs out.

A stale heartbeat proves a participant gone only if heartbeats could be written meanwhile.
When the bucket cannot take them (its leader died and the others are electing a new one, or
this gateway lost its NATS server, or the calls bucket a heartbeat reads is electing), every
heartbeat goes stale at once, and a sweeper that believed them would end every call. So each
gateway watches its own handling of heartbeats and its presence reads
(:class:`PresenceHealth`); while one fails or hangs it times nobody out, and once they go
through again every participant counts as seen then, as etcd renews every lease when a new
leader takes over. A participant who is really gone is swept one heartbeat timeout
later.
"""

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator

from gateway.errors import CallError
from schemas import subjects
from schemas.call_state import CallState, Presence
from schemas.kv import TypedKv
from schemas.logs import get_logger

log = get_logger("gateway.presence")

_MAX_TRACKED = 200_000


#: A heartbeat write taking longer than this means the bucket is not taking writes (a
#: leader election, a reconnect): normally one takes milliseconds.
SLOW_WRITE_S = 1.0


class PresenceHealth:
    """Whether this gateway's presence reads and writes go through, and since when."""

    def __init__(self, clock: Callable[[], float] = time.time, slow_s: float = SLOW_WRITE_S):
        self._clock = clock
        self._slow_s = slow_s
        self._since = 0.0  # trusted from the start: heartbeats written before count
        self._failing = False
        self._in_flight: dict[int, float] = {}
        self._tokens = itertools.count()

    def started(self) -> int:
        token = next(self._tokens)
        self._in_flight[token] = self._clock()
        return token

    def ended(self, token: int, *, ok: bool) -> None:
        """An operation finished: failed, slow (the bucket was not answering for a while),
        or quick. A quick one after trouble restores trust from now on."""
        began = self._in_flight.pop(token, None)
        now = self._clock()
        if not ok:
            if not self._failing:
                log.warning("presence.unavailable")
            self._failing = True
        elif self._failing or (began is not None and now - began > self._slow_s):
            log.info("presence.available_again", after_failure=self._failing)
            self._failing = False
            self._since = now

    def dropped(self, token: int) -> None:
        """An operation was cancelled (its socket went away): it says nothing."""
        self._in_flight.pop(token, None)

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """Watch one operation: a refusal that is an answer (not in the call, the call
        ended) counts as going through; ``unavailable`` or any other error as failing."""
        token = self.started()
        try:
            yield
        except asyncio.CancelledError:
            self.dropped(token)
            raise
        except CallError as err:
            self.ended(token, ok=err.code != "unavailable")
            raise
        except Exception:
            self.ended(token, ok=False)
            raise
        self.ended(token, ok=True)

    def trusted_since(self) -> float | None:
        """Since when stale heartbeats mean something; ``None``: not now (writes fail or
        hang)."""
        now = self._clock()
        if self._failing or any(now - t > self._slow_s for t in self._in_flight.values()):
            return None
        return self._since


def vouched(
    state: CallState, presence: dict[str, float], trusted_since: float | None, now: float
) -> dict[str, float]:
    """The participants' last signs of life as the sweeper may use them: none earlier than
    the moment heartbeats could be written again (``now`` while they cannot)."""
    floor = now if trusted_since is None else trusted_since
    return {
        p.participant_id: max(presence.get(p.participant_id, 0.0), floor)
        for p in state.participants
    }


class PresenceWriter:
    """Writes heartbeats for this gateway's sockets."""

    def __init__(
        self,
        kv: TypedKv[Presence],
        gateway_id: str,
        clock: Callable[[], float] = time.time,
        health: PresenceHealth | None = None,
    ) -> None:
        self._kv = kv
        self._gateway_id = gateway_id
        self._clock = clock
        self.health = health or PresenceHealth(clock)
        self._written: dict[tuple[str, str], float] = {}
        self.writes = 0

    async def beat(self, state: CallState, participant_id: str) -> bool:
        """Record a sign of life; returns whether it was written (not throttled)."""
        now = self._clock()
        key = (state.call_id, participant_id)
        if now - self._written.get(key, 0.0) < state.heartbeat_timeout_s / 10:
            return False
        if len(self._written) >= _MAX_TRACKED:
            self._written.clear()
        self._written[key] = now
        try:
            with self.health.watch():
                await self._kv.put(
                    subjects.presence_key(state.call_id, participant_id),
                    Presence(
                        call_id=state.call_id,
                        participant_id=participant_id,
                        last_seen_at=now,
                        gateway_id=self._gateway_id,
                    ),
                )
        except BaseException:
            self._written.pop(key, None)  # not written: the next heartbeat tries again
            raise
        self.writes += 1
        return True


class PresenceReader:
    """What the sweeper knows of heartbeats, read lazily per call."""

    def __init__(self, kv: TypedKv[Presence], health: PresenceHealth | None = None) -> None:
        self._kv = kv
        self.health = health or PresenceHealth()
        self._seen: dict[str, dict[str, float]] = {}
        self.reads = 0

    def cached(self, call_id: str) -> dict[str, float]:
        return self._seen.get(call_id, {})

    async def refresh(self, state: CallState) -> dict[str, float]:
        """Read the presence of every participant of ``state`` (one get each)."""
        seen: dict[str, float] = {}
        for p in state.participants:
            with self.health.watch():
                entry = await self._kv.get(subjects.presence_key(state.call_id, p.participant_id))
            self.reads += 1
            if entry is not None:
                seen[p.participant_id] = entry.value.last_seen_at
        if len(self._seen) >= _MAX_TRACKED:
            self._seen.clear()
        self._seen[state.call_id] = seen
        return seen

    def forget(self, call_id: str) -> None:
        self._seen.pop(call_id, None)
