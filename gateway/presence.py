"""Participants' heartbeats, kept apart from the call's state (KV ``presence``).

A heartbeat is a plain put of :class:`~schemas.call_state.Presence` (no compare-and-set,
no event), throttled so a participant writes at most once per tenth of its call's heartbeat
timeout. The sweepers read presence only for calls whose heartbeat deadline seems to have
passed by the call's own state, cache what they read, and read again when that runs out.

Whether a stale heartbeat may count is :mod:`gateway.presence_health`'s to say: the writer
and the reader report each of their operations to it.
"""

import time
from collections.abc import Callable

from gateway.presence_health import PresenceHealth
from schemas import subjects
from schemas.call_state import CallState, Presence
from schemas.kv import TypedKv
from schemas.logs import get_logger

log = get_logger("gateway.presence")

_MAX_TRACKED = 200_000


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
        self._writing: set[tuple[str, str]] = set()
        self.writes = 0

    async def beat(self, state: CallState, participant_id: str) -> bool:
        """Record a sign of life; returns whether it was written (not throttled)."""
        now = self._clock()
        key = (state.call_id, participant_id)
        if now - self._written.get(key, 0.0) < state.heartbeat_timeout_s / 10:
            return False
        if key in self._writing:
            return False  # one write per participant at a time: the one in hand retries
        if len(self._written) >= _MAX_TRACKED:
            self._written.clear()
        self._written[key] = now
        self._writing.add(key)
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
        finally:
            self._writing.discard(key)
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
