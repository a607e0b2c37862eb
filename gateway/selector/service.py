"""The mode selector process: call events in, migration decisions out, by compare-and-set.

- A durable JetStream consumer of ``CALL_EVENTS`` (shared by every instance) turns each
  event that can change a call's mode into "decide this call now". Calls are decided in
  parallel, each call's decisions one at a time (:class:`~gateway.selector.lanes.Lanes`);
  an event is acknowledged once a decision that started after it has been written; long
  work says ``in_progress`` so it is not redelivered meanwhile.
- A decision (:func:`gateway.selector.rules.decide`) is made inside the compare-and-set on
  the call's live state and carries a new migration epoch, so duplicates, redeliveries,
  out-of-order events and other instances never produce two migrations or a wrong mode.
  What it writes (``MigrationStarted``, ``CallModeChanged``, ``migrate_to_*`` commands)
  leaves through the call's outbox.
- Time-based decisions (the hold before going back to P2P, migration deadlines, retry
  back-offs) wake the call at the time :func:`decide` names; a periodic scan of every call
  (from a KV mirror) is the safety net under both.
- Placement reads ``media.node.heartbeat``; between heartbeats every node is probed
  (:mod:`gateway.selector.liveness`), and the calls of a node that is gone (confirmed dead,
  or silent past the expiry) are decided at once rather than at the next scan.
"""

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import time
from typing import Any

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind

from gateway import migration
from gateway import state_machine as sm
from gateway.call_store import CallStore
from gateway.errors import CallError
from gateway.lanes import Lanes
from gateway.selector.liveness import NodeProbes, ProbeResult
from gateway.selector.placement import NodeTable
from gateway.selector.rules import Decision, Rules, decide, hold_since
from gateway.selector.settings import SelectorSettings
from gateway.state_machine import Outcome
from gateway.timers import CallMirror
from schemas import subjects, telemetry
from schemas.bus import Bus, Incoming, continue_trace, fetch_soon
from schemas.call_events import (
    ActiveSpeakerChanged,
    AnyCallEvent,
    CallRinging,
    MediaStateChanged,
    ParticipantLanguageChanged,
    RingEnded,
)
from schemas.call_state import ActiveCallClaim, CallState
from schemas.codec import decoder_for
from schemas.errors import NoResponders, RpcFailed
from schemas.kv import TypedKv
from schemas.logs import get_logger
from schemas.media import LeasesRenewed, MediaNodeHeartbeat, RenewLeases
from schemas.runtime import Service

log = get_logger("gateway.selector")

#: Events that never change what the selector would decide (transcription being turned
#: on or off does: a call's captions uplinks need a node only while it is on).
_IRRELEVANT = (
    ActiveSpeakerChanged,
    MediaStateChanged,
    CallRinging,
    RingEnded,
    ParticipantLanguageChanged,
)
_ACK_WAIT_S = 30.0
_FETCH = 64


def _node_of(state: CallState) -> str | None:
    """The node a call's media is on, or is moving to."""
    if state.migration is not None and state.migration.node_id is not None:
        return state.migration.node_id
    return state.media_node_id


def _needs_every_node(d: Decision) -> bool:
    """Decisions that take a node's silence for its death (wrong while the table fills)."""
    return d.kind == "no_node" or (
        d.kind in ("start", "abandon") and d.reason == "node_unavailable"
    )


class ModeSelector:
    """Decides calls (the I/O around :func:`decide`); used by :class:`SelectorService`."""

    def __init__(
        self,
        store: CallStore,
        nodes: NodeTable,
        rules: Rules,
        *,
        concurrency: int,
        clock: Any = time.time,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.rules = rules
        self._clock = clock
        self.lanes = Lanes(self._decide_call, limit=concurrency)
        self._wakeups: list[tuple[float, int, str, contextvars.Context]] = []
        self._wakeup_order = itertools.count()
        self._woken = asyncio.Event()
        self._spawned: set[asyncio.Task[None]] = set()
        self.decisions: dict[str, int] = {}

    # --- one call -------------------------------------------------------------------------
    async def decide_call(self, call_id: str) -> None:
        await self.lanes.request(call_id)

    async def _decide_call(self, call_id: str) -> None:
        try:
            outcome = await self.store.apply(call_id, self._transition)
        except CallError as err:
            if err.code != "not_found":
                raise
            return
        if outcome is None:
            return
        m = outcome.state.migration
        if m is not None and m.node_id is not None and m.epoch == outcome.state.epoch:
            self.nodes.reserve(m.node_id, len(outcome.state.participants))
        log.info(
            "selector.decided",
            call_id=call_id,
            mode=outcome.state.mode,
            epoch=outcome.state.epoch,
            events=[type(e).__name__ for e in outcome.events],
        )

    def _transition(self, state: CallState) -> Outcome | None:
        """Decide on the live state (inside the compare-and-set) and say what to write."""
        now = self._clock()
        since = hold_since(state, now)
        decision = decide(state, self.nodes.live(now), now=now, below_since=since, rules=self.rules)
        if (
            not self.nodes.warm(now)
            and _needs_every_node(decision)
            and not self.nodes.heard_of(_node_of(state))
        ):
            # Just started: the nodes have not all reported yet, so a node unheard of may
            # well be alive. Look again once every node has had time to report.
            self.wake(state.call_id, self.nodes.warm_at)
            return None
        if decision.wake_at is not None:
            self.wake(state.call_id, decision.wake_at)
        self.decisions[decision.kind] = self.decisions.get(decision.kind, 0) + 1
        outcome = self._carry_out(state, decision, now)
        if decision.captions_change:
            self.decisions["captions"] = self.decisions.get("captions", 0) + 1
            outcome = with_captions_node(state, outcome, decision.captions_node_id)
        if since != state.small_since:
            outcome = outcome or Outcome(state)
            outcome.state = msgspec.structs.replace(outcome.state, small_since=since)
        return outcome

    def _carry_out(self, state: CallState, d: Decision, now: float) -> Outcome | None:
        rules = self.rules
        if d.kind == "start":
            assert d.to_mode is not None
            return migration.start(
                state,
                to_mode=d.to_mode,
                reason=d.reason,
                now=now,
                deadline_s=rules.deadline_s,
                node_id=d.node_id,
                offerer_id=d.offerer_id,
            )
        if d.kind == "complete":
            return migration.complete(state, now=now)
        if d.kind == "abandon":
            retry = rules.retry_in(state.failed_migrations)
            out = migration.abandon(
                state, outcome=d.outcome, reason=d.reason, now=now, retry_in_s=retry
            )
            if out is not None and out.state.mode_retry_at is not None:
                self.wake(state.call_id, out.state.mode_retry_at)
            return out
        if d.kind == "no_node":
            retry = rules.retry_in(state.failed_migrations)
            self.wake(state.call_id, now + retry)
            return migration.no_node(state, now=now, retry_in_s=retry, reason=d.reason)
        if d.kind == "prewarm":
            return migration.set_prewarm(state, d.node_id)
        return None

    # --- waking calls at a time ------------------------------------------------------------
    def wake(self, call_id: str, at: float) -> None:
        """Decide ``call_id`` again at ``at``, continuing the trace of what asked for it (the
        event whose decision had to wait: a hold, a deadline, nodes not all heard from)."""
        entry = (at, next(self._wakeup_order), call_id, contextvars.copy_context())
        heapq.heappush(self._wakeups, entry)
        self._woken.set()

    async def run_wakeups(self) -> None:
        while True:
            now = self._clock()
            due: dict[str, contextvars.Context] = {}
            while self._wakeups and self._wakeups[0][0] <= now:
                _, _, call_id, context = heapq.heappop(self._wakeups)
                due[call_id] = context  # one decision per call, in the latest asker's trace
            for call_id, context in due.items():
                self.spawn(call_id, context=context)
            delay = self._wakeups[0][0] - now if self._wakeups else 5.0
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), max(0.005, min(delay, 5.0)))

    def spawn(self, call_id: str, *, context: contextvars.Context | None = None) -> None:
        """Decide a call in the background (the task is kept until it ends)."""
        task = asyncio.get_running_loop().create_task(self.decide_quietly(call_id), context=context)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def decide_quietly(self, call_id: str) -> None:
        try:
            await self.decide_call(call_id)
        except Exception as exc:
            log.warning("selector.decide_failed", call_id=call_id, error=type(exc).__name__)


def with_captions_node(
    state: CallState, out: Outcome | None, node_id: str | None
) -> Outcome | None:
    """``out`` (or no change) with the call's captions uplinks placed on ``node_id`` too, in
    the same write."""
    base = out.state if out is not None else state
    placed = sm.set_captions_node(base, node_id)
    if placed is None:
        return out
    if out is None:
        return placed
    out.state = placed.state
    out.events += placed.events
    return out


class SelectorService(Service[SelectorSettings]):
    """The mode selector process (see the module docstring)."""

    kind = "selector"

    async def start(self, bus: Bus) -> None:
        settings = self.settings
        self.bus = bus
        calls_kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
        claims_kv: TypedKv[ActiveCallClaim] = await bus.kv(
            subjects.CALL_CLAIMS_BUCKET, ActiveCallClaim
        )
        self.store = CallStore(bus, calls_kv, claims_kv)
        self.nodes = NodeTable(settings.selector_node_expiry_s, started_at=time.time())
        self.probes = NodeProbes(
            settings.selector_node_probe_interval_s, misses=settings.selector_node_probe_misses
        )
        self._known_nodes: set[str] = set()
        # After its own reconnect every node may briefly answer "no responders".
        bus.on_reconnect(self._after_reconnect)
        self.selector = ModeSelector(
            self.store,
            self.nodes,
            settings.rules(),
            concurrency=settings.selector_concurrency,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._in_hand: set[asyncio.Task[None]] = set()
        await bus.subscribe(subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat, self._on_node)
        self.mirror = CallMirror(await bus.js.key_value(subjects.CALLS_BUCKET))
        await self.mirror.start()
        self._decoder: msgspec.json.Decoder[AnyCallEvent] = decoder_for(AnyCallEvent)
        config = ConsumerConfig(
            durable_name=settings.selector_durable,
            filter_subject=subjects.ALL_CALL_EVENTS,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=_ACK_WAIT_S,
            max_deliver=10,
            max_ack_pending=max(_FETCH * 4, settings.selector_concurrency * 4),
            # A new selector group starts with what happens from now on; an existing one
            # resumes where the group left off.
            deliver_policy=DeliverPolicy.NEW,
        )
        self._psub = await bus.js.pull_subscribe(
            subjects.ALL_CALL_EVENTS,
            durable=settings.selector_durable,
            stream=subjects.CALL_EVENTS_STREAM,
            config=config,
        )
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self._consume(), name="selector-consumer"),
            loop.create_task(self.selector.run_wakeups(), name="selector-wakeups"),
            loop.create_task(self._scan(), name="selector-scan"),
            loop.create_task(self._watch_nodes(), name="selector-nodes"),
        ]
        self.accepting = True
        log.info("selector.serving", durable=settings.selector_durable)

    async def _after_reconnect(self) -> None:
        self.probes.reconnected(time.time())

    async def _on_node(self, beat: MediaNodeHeartbeat, _: Incoming) -> None:
        self.nodes.update(beat, time.time())

    async def _watch_nodes(self) -> None:
        """Probe the media nodes between their heartbeats; decide the calls of a node that
        is gone (confirmed dead, or silent past the expiry) at once."""
        while True:
            now = time.time()
            live = {n.node_id for n in self.nodes.live(now)}
            if self.probes.enabled:
                due = self.probes.due(live, now)
                outcomes = await asyncio.gather(*(self._probe(n) for n in due))
                now = time.time()
                for node_id, outcome in zip(due, outcomes, strict=True):
                    heard_at = self.nodes.seen_at(node_id)
                    if self.probes.result(node_id, outcome, now, heard_at=heard_at):
                        self.nodes.forget(node_id)
                        live.discard(node_id)
                        log.warning("selector.node_dead", node_id=node_id, via="no_responders")
            for node_id in self._known_nodes - live:
                self._move_calls_off(node_id)
            self._known_nodes = live
            now = time.time()
            wait = self.probes.next_at(now) - now if self.probes.enabled else 1.0
            await asyncio.sleep(min(max(wait, 0.02), 1.0))

    async def _probe(self, node_id: str) -> ProbeResult:
        try:
            await self.bus.request(
                subjects.media_rpc(node_id, RenewLeases.verb),
                RenewLeases(session_ids=[]),
                LeasesRenewed,
                timeout=1.0,
            )
        except NoResponders:
            return "no_responders"
        except RpcFailed:
            return "answered"  # a typed refusal: somebody is there
        except Exception:  # a timeout, or this selector's own connection in trouble
            return "unanswered"
        return "answered"

    def _move_calls_off(self, node_id: str) -> None:
        """Decide now every call that uses a node that is gone."""
        moved = 0
        for call_id, (state, _) in list(self.mirror.calls.items()):
            if state.status == "ended":
                continue
            migrating_to = state.migration.node_id if state.migration is not None else None
            if node_id in (state.media_node_id, state.prewarm_node_id, migrating_to):
                self.selector.spawn(call_id)
                moved += 1
        log.warning("selector.node_gone", node_id=node_id, calls=moved)

    async def _consume(self) -> None:
        while True:
            if not self.accepting:
                return
            try:
                msgs = await fetch_soon(self._psub, _FETCH, wait_s=1.0)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return
            except Exception as exc:
                log.warning("selector.fetch_failed", error=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                task = asyncio.get_running_loop().create_task(self._handle(msg))
                self._in_hand.add(task)
                task.add_done_callback(self._in_hand.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            event = self._decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self.bus.dead_letter(msg.subject, msg.data, "AnyCallEvent", str(exc))
            await msg.term()
            return
        if isinstance(event, _IRRELEVANT):
            await msg.ack()
            return
        if telemetry.STATE.active:
            # What the decision writes (commands, events) continues the trace of the event.
            with continue_trace(msg, "process", SpanKind.CONSUMER):
                await self._decide_then_ack(msg, event)
        else:
            await self._decide_then_ack(msg, event)

    async def _decide_then_ack(self, msg: Msg, event: AnyCallEvent) -> None:
        with self.in_flight:
            decided = asyncio.ensure_future(self.selector.decide_call(event.call_id))
            try:
                while True:
                    done, _ = await asyncio.wait({decided}, timeout=_ACK_WAIT_S / 3)
                    if done:
                        break
                    await msg.in_progress()  # still working on it: do not redeliver
                decided.result()
            except Exception as exc:
                log.warning(
                    "selector.decide_failed", call_id=event.call_id, error=type(exc).__name__
                )
                with contextlib.suppress(Exception):
                    await msg.nak(delay=1.0)
                return
        await msg.ack()

    async def _scan(self) -> None:
        """Every so often, look at every call the rules might act on (lost wake-ups, a
        selector restarted mid-migration, a node that died with nobody leaving)."""
        while True:
            await asyncio.sleep(self.settings.selector_scan_interval_s)
            try:
                self._scan_once(time.time())
            except Exception as exc:  # the safety net must outlive a bad entry
                log.warning("selector.scan_failed", error=type(exc).__name__)

    def _scan_once(self, now: float) -> None:
        live = self.nodes.live(now)
        for call_id, (state, _) in list(self.mirror.calls.items()):
            if state.status == "ended":
                continue
            hold = hold_since(state, now)
            decision = decide(state, live, now=now, below_since=hold, rules=self.selector.rules)
            if decision.acts:
                self.selector.spawn(call_id)
            elif decision.wake_at is not None:
                self.selector.wake(call_id, decision.wake_at)

    async def stop_accepting(self) -> None:
        await super().stop_accepting()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._psub.unsubscribe()

    async def wait_idle(self) -> None:
        if self._in_hand:
            await asyncio.gather(*self._in_hand, return_exceptions=True)
        await super().wait_idle()

    async def close(self) -> None:
        await self.selector.lanes.close()
        await self.mirror.stop()

    def load_extra(self) -> dict[str, float]:
        if not hasattr(self, "selector"):
            return {}
        extra = {f"decisions_{k}": float(v) for k, v in self.selector.decisions.items()}
        extra["calls_deciding"] = float(self.selector.lanes.busy)
        extra["decision_runs"] = float(self.selector.lanes.runs)
        extra["media_nodes_live"] = float(len(self.nodes.live(time.time())))
        extra["node_probes_sent"] = float(self.probes.sent)
        extra["nodes_confirmed_dead"] = float(self.probes.confirmed_dead)
        extra["cas_conflicts"] = float(self.store.cas_conflicts)
        return extra
