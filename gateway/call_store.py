"""Live call state in KV ``calls``, changed only by compare-and-set; the one exit of its effects.

:meth:`CallStore.apply` reads a call, runs a pure transition on it, stamps the events with
the call's next revisions and writes state and outbox at the revision it read; when another
writer got there first it re-reads and re-runs the transition, so the decision is always
made on the current state. Then the store itself publishes the whole outbox in order
(events into ``CALL_EVENTS``, de-duplicated by their derived ids; commands on core NATS)
and removes what it published. Nobody else publishes a call's events or commands: socket
notices are projected from the events by every gateway (:mod:`gateway.notices`).

A failure to publish after a successful write does not fail the operation: the change
happened, and the entries stay in the outbox, where a sweeper finds and publishes them
(:meth:`recover`). One active call per conversation is claimed with a KV *create* in
``call_claims``.
"""

import contextlib
import time
from collections.abc import Callable

import msgspec
import nats.errors
import nats.js.errors

from gateway.errors import CallError
from gateway.outbox import OutboxFull, stamp, without
from gateway.state_machine import Outcome
from schemas import subjects
from schemas.bus import Bus
from schemas.call_state import ActiveCallClaim, CallState, OutboxEntry
from schemas.codec import decoder_for
from schemas.errors import KeyExists, RevisionMismatch
from schemas.ids import check_id
from schemas.kv import KvEntry, TypedKv
from schemas.logs import get_logger
from schemas.provisioning import DUPLICATE_WINDOW_S

log = get_logger("gateway.call_store")

MAX_CAS_ATTEMPTS = 50
#: How long a read of a call keeps retrying while the bucket elects a leader before the
#: request is refused ``unavailable`` (retryable): under the 10 s a browser waits for an
#: answer, so it hears a reason instead of a timeout.
READ_BUDGET_S = 8.0
#: A claim whose call never got written (crash between the two writes) is stale after this.
STALE_CLAIM_S = 5.0

Transition = Callable[[CallState], Outcome | None]
#: Runs after the write and before anything is published (binds the caller's socket, so
#: the notices projected from these very events already reach it).
Written = Callable[[Outcome], None]


class _SeqOnly(msgspec.Struct):
    seq: int = 0


class CallStore:
    def __init__(
        self,
        bus: Bus,
        calls: TypedKv[CallState],
        claims: TypedKv[ActiveCallClaim],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self.calls = calls
        self.claims = claims
        self._clock = clock
        self._seq_decoder: msgspec.json.Decoder[_SeqOnly] = decoder_for(_SeqOnly)
        self.cas_conflicts = 0
        self.events_published = 0
        self.commands_published = 0
        self.publish_failures = 0
        self.recovered = 0

    async def get(self, call_id: str) -> KvEntry[CallState] | None:
        try:
            check_id(call_id, "call_id")
        except ValueError:
            return None
        try:
            return await self.calls.get(call_id, budget_s=READ_BUDGET_S)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            # The bucket is electing a leader for longer than the retries last (a node of
            # the cluster just died): a typed refusal the client may retry, not "internal".
            log.warning("call_store.read_unavailable", call_id=call_id, error=type(exc).__name__)
            raise CallError("unavailable", "the call store is busy; try again") from None

    async def require(self, call_id: str) -> CallState:
        entry = await self.get(call_id)
        if entry is None:
            raise CallError("not_found", "no such call")
        return entry.value

    async def active_call_of(self, conversation_id: str) -> CallState | None:
        claim = await self.claims.get(subjects.call_claim_key(conversation_id))
        if claim is None:
            return None
        entry = await self.get(claim.value.call_id)
        if entry is None or entry.value.status == "ended":
            return None
        return entry.value

    # --- writing -------------------------------------------------------------------------
    def _stamped(self, outcome: Outcome, base: CallState) -> None:
        try:
            outcome.state, outcome.events = stamp(
                outcome.state, outcome.events, outcome.commands, base=base, now=self._clock()
            )
        except OutboxFull:
            log.error("call_store.outbox_full", call_id=base.call_id)
            raise CallError(
                "unavailable", "this call cannot record changes right now; try again"
            ) from None

    async def create(self, outcome: Outcome, *, written: Written | None = None) -> Outcome:
        """Claim the conversation, write the new call, publish its events."""
        initial = outcome.state
        self._stamped(outcome, initial)
        state = outcome.state
        key = subjects.call_claim_key(state.conversation_id)
        claim = ActiveCallClaim(
            conversation_id=state.conversation_id, call_id=state.call_id, claimed_at=time.time()
        )
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                await self.claims.create(key, claim)
                break
            except KeyExists:
                if not await self._clear_stale_claim(key):
                    existing = await self.claims.get(key)
                    details = {"activeCallId": existing.value.call_id} if existing else {}
                    raise CallError(
                        "conflict", "this conversation already has an active call", details
                    ) from None
        else:
            raise CallError("unavailable", "could not claim the conversation; try again")
        outcome.revision = await self.calls.create(state.call_id, state)
        await self._after_write(outcome, written)
        return outcome

    async def _clear_stale_claim(self, key: str) -> bool:
        """Delete a claim whose call has ended or never appeared; True if it was cleared."""
        entry = await self.claims.get(key)
        if entry is None:
            return True
        call = await self.get(entry.value.call_id)
        stale = (call is not None and call.value.status == "ended") or (
            call is None and time.time() - entry.value.claimed_at > STALE_CLAIM_S
        )
        if not stale:
            return False
        with contextlib.suppress(RevisionMismatch):
            await self.claims.delete(key, revision=entry.revision)
        return True

    async def apply(
        self, call_id: str, transition: Transition, *, written: Written | None = None
    ) -> Outcome | None:
        """Run ``transition`` on the current state, write it by compare-and-set, publish.

        Returns the winning outcome (its events stamped and published, or left to the
        sweeper if publishing failed), or ``None`` when the transition had nothing to do.
        ``CallError`` from the transition propagates; nothing was written then.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self.get(call_id)
            if entry is None:
                raise CallError("not_found", "no such call")
            outcome = transition(entry.value)
            if outcome is None:
                return None
            self._stamped(outcome, entry.value)
            try:
                outcome.revision = await self.calls.update(call_id, outcome.state, entry.revision)
            except RevisionMismatch:
                self.cas_conflicts += 1
                continue
            await self._after_write(outcome, written)
            return outcome
        raise CallError("unavailable", "the call is changing too fast; try again")

    async def _after_write(self, outcome: Outcome, written: Written | None) -> None:
        if written is not None:
            written(outcome)
        for event in outcome.events:
            log.info(
                "call.event",
                call_id=event.call_id,
                seq=event.seq,
                event_type=type(event).__name__,
                participant_id=getattr(event, "participant_id", None),
            )
        # The change is written: nothing after this point may fail the caller (it would be
        # told "internal" for a change that was applied). What cannot be done now is left
        # to recovery: the sweepers publish a pending outbox, and a stale claim is cleared
        # by the next call of the conversation.
        await self.flush(outcome.call_id, outcome.state.outbox, check_stream=False)
        if outcome.state.status == "ended":
            try:
                await self._release_claim(outcome.state)
            except Exception as exc:
                log.warning(
                    "call_store.claim_left", call_id=outcome.call_id, error=type(exc).__name__
                )

    # --- publishing ------------------------------------------------------------------------
    async def flush(self, call_id: str, outbox: list[OutboxEntry], *, check_stream: bool) -> int:
        """Publish ``outbox`` in order, then remove what was published. Returns how many
        entries this call added to the stream (not those it found there already).

        Every writer publishes the whole outbox it wrote, not only its own entries: with
        de-duplication, a call's events then enter the stream in ``seq`` order whichever
        writers race. ``check_stream`` (recovery of old entries, which may be older than the
        de-duplication window) first asks the stream whether each event is already there.
        """
        if not outbox:
            return 0
        published: set[str] = set()
        sent = 0
        try:
            # An entry older than half the de-duplication window may have been published
            # by a writer whose acknowledgement was lost long ago: JetStream no longer
            # remembers its id, so ask the stream itself.
            old = self._clock() - DUPLICATE_WINDOW_S / 2
            for entry in outbox:
                check = check_stream or entry.written_at < old
                if check and entry.kind == "event" and await self._in_stream(entry):
                    published.add(entry.message_id)
                    continue
                if await self._publish(entry):
                    sent += 1
                published.add(entry.message_id)
        except Exception as exc:  # NATS away: the sweeper publishes the rest later
            self.publish_failures += 1
            log.warning(
                "call_store.publish_deferred",
                call_id=call_id,
                pending=len(outbox) - len(published),
                error=type(exc).__name__,
            )
        if published:
            try:
                await self._remove_from_outbox(call_id, published)
            except Exception as exc:  # published twice at worst: de-duplicated by id
                log.info("call_store.outbox_left_to_sweeper", call_id=call_id, error=str(exc))
        return sent

    async def _publish(self, entry: OutboxEntry) -> bool:
        """Publish one entry; False if the stream already had it (a racing writer's)."""
        data = bytes(entry.data)
        if entry.kind == "event":
            # Through the bus helper, so the trace context travels in the headers.
            ack = await self._bus.js_publish_encoded(entry.subject, data, msg_id=entry.message_id)
            if ack.duplicate:
                return False
            self.events_published += 1
            return True
        await self._bus.publish_encoded(entry.subject, data)
        self.commands_published += 1
        return True

    async def _in_stream(self, entry: OutboxEntry) -> bool:
        """Whether this event is in ``CALL_EVENTS`` already.

        A call's events reach the stream in ``seq`` order, so the last message on this
        event's subject having a ``seq`` at least this one's means it was published.
        """
        try:
            last = await self._bus.js.get_last_msg(subjects.CALL_EVENTS_STREAM, entry.subject)
        except nats.js.errors.NotFoundError:
            return False
        try:
            seq = self._seq_decoder.decode(last.data or b"{}").seq
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return bool(seq >= entry.seq)

    async def _remove_from_outbox(self, call_id: str, message_ids: set[str]) -> None:
        """Drop published entries (losing every race leaves them to the sweeper, whose
        stream check then finds them published)."""
        for _ in range(5):
            try:
                entry = await self.get(call_id)
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.info("call_store.outbox_left_to_sweeper", call_id=call_id, error=str(exc))
                return
            if entry is None:
                return
            remaining = without(entry.value.outbox, message_ids)
            if len(remaining) == len(entry.value.outbox):
                return
            try:
                await self.calls.update(
                    call_id, msgspec.structs.replace(entry.value, outbox=remaining), entry.revision
                )
                return
            except RevisionMismatch:
                self.cas_conflicts += 1
        log.info("call_store.outbox_left_to_sweeper", call_id=call_id)

    async def recover(self, call_id: str, older_than: float) -> int:
        """Publish entries written before ``older_than`` whose writer never removed them
        (it crashed, or NATS was away), checking the stream first. Returns how many were
        missing and published here."""
        entry = await self.get(call_id)
        if entry is None or not entry.value.outbox:
            return 0
        if entry.value.outbox[0].written_at >= older_than:
            return 0
        sent = await self.flush(call_id, entry.value.outbox, check_stream=True)
        if sent:
            self.recovered += sent
            log.warning("call_store.outbox_recovered", call_id=call_id, published=sent)
        return sent

    async def _release_claim(self, state: CallState) -> None:
        key = subjects.call_claim_key(state.conversation_id)
        entry = await self.claims.get(key)
        if entry is None or entry.value.call_id != state.call_id:
            return
        with contextlib.suppress(RevisionMismatch):
            await self.claims.delete(key, revision=entry.revision)

    async def forget(self, call_id: str, revision: int) -> None:
        """Remove an ended call after its retention (only if unchanged since read)."""
        with contextlib.suppress(RevisionMismatch):
            await self.calls.delete(call_id, revision=revision)
