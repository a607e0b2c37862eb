"""The deadline sweeper every gateway runs, and the local mirror of live calls it reads.

The mirror follows KV ``calls`` through a watch (one ordered consumer per gateway), so
finding due calls costs no round trip. Every ``call_sweep_interval_s`` each gateway applies
the due transitions (ring timeout, reconnect grace, heartbeat loss, maximum duration) by
compare-and-set: the first writer wins and publishes; the others re-read, find nothing due,
and publish nothing. So each timer fires exactly once, wherever the call was started, and a
crashed gateway's calls are swept by the others. Heartbeats live in the ``presence`` bucket:
a call whose heartbeat deadline has passed by its own state is checked against presence
first (:class:`gateway.presence.PresenceReader`). The sweeper also publishes outbox entries
their writer never confirmed (:meth:`gateway.call_store.CallStore.recover`).

Why not per-call asyncio timers on the starting gateway: they die with it, and handing them
over needs leases; deadlines inside the state need nothing but the CAS already in use.
"""

import asyncio
import contextlib
import time

import msgspec
from nats.js.kv import KeyValue

from gateway.call_store import CallStore
from gateway.errors import CallError
from gateway.presence import PresenceReader
from gateway.presence_health import vouched
from gateway.state_machine import apply_due, last_seen, next_deadline
from schemas.call_state import CallState
from schemas.codec import decoder_for
from schemas.logs import get_logger

log = get_logger("gateway.timers")

_DELETE_OPS = ("DEL", "PURGE")


class CallMirror:
    """An eventually consistent copy of every entry of KV ``calls`` (value, revision)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.calls: dict[str, tuple[CallState, int]] = {}
        self._decoder: msgspec.json.Decoder[CallState] = decoder_for(CallState)
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    async def start(self) -> None:
        watcher = await self._kv.watchall()
        self._task = asyncio.create_task(self._run(watcher), name="call-mirror")
        await asyncio.wait_for(self.synced.wait(), 30)

    async def _run(self, watcher: KeyValue.KeyWatcher) -> None:
        """Follow the bucket; if the watch ever fails, say so and watch again from scratch
        (a silently dead mirror would leave this gateway sweeping a frozen picture)."""
        while True:
            try:
                await self._follow(watcher)
                log.warning("mirror.watch_ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("mirror.watch_failed", error=type(exc).__name__)
            while True:
                await asyncio.sleep(1.0)
                try:
                    watcher = await self._kv.watchall()
                    break
                except Exception as exc:
                    log.warning("mirror.rewatch_failed", error=type(exc).__name__)
            self.calls.clear()  # the new watch replays every current entry

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None:
                    self.synced.set()
                    continue
                if entry.operation in _DELETE_OPS or entry.value is None:
                    self.calls.pop(entry.key, None)
                    continue
                try:
                    state = self._decoder.decode(entry.value)
                except Exception:
                    log.warning("mirror.undecodable_entry", call_id=entry.key)
                    continue
                self.calls[entry.key] = (state, int(entry.revision or 0))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
            raise

    def get(self, call_id: str) -> CallState | None:
        found = self.calls.get(call_id)
        return found[0] if found else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Sweeper:
    """Applies due call timers and recovers unpublished outbox entries; runs on every gateway."""

    def __init__(
        self,
        store: CallStore,
        mirror: CallMirror,
        presence: PresenceReader,
        *,
        interval_s: float,
        retention_s: float,
        outbox_grace_s: float = 2.0,
    ) -> None:
        self._store = store
        self._mirror = mirror
        self._presence = presence
        self._interval = interval_s
        self._retention = retention_s
        self._outbox_grace = outbox_grace_s
        self.recovered = 0
        self._task: asyncio.Task[None] | None = None
        self.fired = 0
        #: Sweeps done so far (a test or an operator can tell the sweeper is running).
        self.rounds = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="call-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a NATS hiccup must not stop the timers
                log.warning("sweeper.failed", error=type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def sweep_once(self) -> int:
        now = time.time()
        fired = 0
        for call_id, (state, revision) in list(self._mirror.calls.items()):
            try:
                if await self._sweep_call(call_id, state, revision, now):
                    fired += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad call must not stop the others' timers
                log.warning("sweeper.call_failed", call_id=call_id, error=type(exc).__name__)
        self.fired += fired
        self.rounds += 1
        return fired

    async def _sweep_call(self, call_id: str, state: CallState, revision: int, now: float) -> bool:
        if state.outbox and state.outbox[0].written_at < now - self._outbox_grace:
            self.recovered += await self._store.recover(call_id, now - self._outbox_grace)
        if state.status == "ended":
            self._presence.forget(call_id)
            if (
                state.ended_at is not None
                and now - state.ended_at > self._retention
                and not state.outbox
            ):
                await self._store.forget(call_id, revision)
            return False
        return await self._fire(call_id, state, now)

    async def _fire(self, call_id: str, state: CallState, now: float) -> bool:
        deadline = next_deadline(state, self._presence.cached(call_id))
        if deadline is None or deadline > now:
            return False
        # Due by what we knew: read the heartbeats before deciding anyone is gone, and count
        # only the silence outside this gateway's outages (gateway/presence_health.py).
        seen = await self._presence.refresh(state)
        presence = vouched(state, seen, self._presence.health, time.time())
        deadline = next_deadline(state, presence)
        if deadline is None or deadline > now:
            return False
        try:
            outcome = await self._store.apply(
                call_id, lambda s: apply_due(s, now=time.time(), presence=presence)
            )
        except CallError:
            return False
        if outcome is None:
            return False  # another gateway won; nothing to publish here
        at = time.time()
        log.info(
            "sweeper.fired",
            call_id=call_id,
            status=outcome.state.status,
            end_reason=outcome.state.end_reason,
            # Why: how long ago each participant was last heard of, and how much of that
            # time this gateway could not handle heartbeats in (not counted).
            last_seen_s_ago={
                p.participant_id: round(at - last_seen(p, seen), 2) for p in state.participants
            },
            outage_s={
                p.participant_id: round(presence[p.participant_id] - last_seen(p, seen), 2)
                for p in state.participants
            },
        )
        return True
