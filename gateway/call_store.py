"""Live call state in KV ``calls``, changed only by compare-and-set, each change published.

:meth:`CallStore.apply` reads a call, runs a pure transition on it, and writes the result
at the revision it read; when another writer got there first it re-reads and re-runs the
transition, so the decision is always made on the current state. Only the writer whose
compare-and-set won publishes the transition's events (JetStream, de-duplicated by event id)
and socket notices. One active call per conversation is claimed with a KV *create* in
``call_claims``.
"""

import contextlib
import time
from collections.abc import Callable

import msgspec
import nats.js.errors

from gateway.delivery import Delivery
from gateway.errors import CallError
from gateway.state_machine import Outcome
from schemas import subjects
from schemas.bus import Bus
from schemas.call_state import ActiveCallClaim, CallState, OutboxEvent
from schemas.codec import encode
from schemas.errors import KeyExists, RevisionMismatch
from schemas.ids import check_id
from schemas.kv import KvEntry, TypedKv
from schemas.logs import get_logger

log = get_logger("gateway.call_store")

MAX_CAS_ATTEMPTS = 50
#: An outbox never grows past this (entries are normally removed right after publishing).
MAX_OUTBOX = 200
#: A claim whose call never got written (crash between the two writes) is stale after this.
STALE_CLAIM_S = 5.0

Transition = Callable[[CallState], Outcome | None]


class CallStore:
    def __init__(
        self,
        bus: Bus,
        calls: TypedKv[CallState],
        claims: TypedKv[ActiveCallClaim],
        delivery: Delivery,
    ) -> None:
        self._bus = bus
        self.calls = calls
        self.claims = claims
        self._delivery = delivery
        self.cas_conflicts = 0
        self.events_published = 0

    async def get(self, call_id: str) -> KvEntry[CallState] | None:
        try:
            check_id(call_id, "call_id")
        except ValueError:
            return None
        return await self.calls.get(call_id)

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
    async def create(self, outcome: Outcome) -> Outcome:
        """Claim the conversation and write the new call; ``conflict`` if one is active."""
        now = time.time()
        state = msgspec.structs.replace(
            outcome.state, updated_at=now, outbox=_outbox_of(outcome, now)
        )
        outcome.state = state
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

    async def apply(self, call_id: str, transition: Transition) -> Outcome | None:
        """Run ``transition`` on the current state and write it by compare-and-set.

        Returns the winning outcome (not yet published: call :meth:`publish`), or ``None``
        when the transition had nothing to do. ``CallError`` from the transition propagates.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self.get(call_id)
            if entry is None:
                raise CallError("not_found", "no such call")
            outcome = transition(entry.value)
            if outcome is None:
                return None
            now = time.time()
            outbox = [*outcome.state.outbox, *_outbox_of(outcome, now)]
            if len(outbox) > MAX_OUTBOX:
                log.warning(
                    "call_store.outbox_full", call_id=call_id, dropped=len(outbox) - MAX_OUTBOX
                )
                outbox = outbox[-MAX_OUTBOX:]
            outcome.state = msgspec.structs.replace(outcome.state, updated_at=now, outbox=outbox)
            try:
                outcome.revision = await self.calls.update(call_id, outcome.state, entry.revision)
            except RevisionMismatch:
                self.cas_conflicts += 1
                continue
            return outcome
        raise CallError("unavailable", "the call is changing too fast; try again")

    async def publish(self, outcome: Outcome) -> None:
        """Publish a written outcome: events into ``CALL_EVENTS``, then socket notices."""
        for event in outcome.events:
            await self._bus.js_publish(
                subjects.call_event(event.call_id, event.subject_name), event, msg_id=event.event_id
            )
            self.events_published += 1
        if outcome.notices:
            await self._delivery.send_notices(outcome.call_id, outcome.notices)
        if outcome.events:
            await self._remove_from_outbox(outcome.call_id, {e.event_id for e in outcome.events})
        if outcome.state.status == "ended":
            await self._release_claim(outcome.state)
        for event in outcome.events:
            log.info(
                "call.event",
                call_id=event.call_id,
                event_type=type(event).__name__,
                participant_id=getattr(event, "participant_id", None),
            )

    async def _remove_from_outbox(self, call_id: str, event_ids: set[str]) -> None:
        """Drop published events from the outbox (a lost race leaves them to the sweeper)."""
        for _ in range(5):
            entry = await self.get(call_id)
            if entry is None:
                return
            remaining = [e for e in entry.value.outbox if e.event_id not in event_ids]
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

    async def flush_outbox(self, call_id: str, older_than: float) -> int:
        """Publish outbox events written before ``older_than`` whose writer never confirmed
        them (it crashed after its write), then remove them. Returns how many were missing
        from the stream and published here."""
        entry = await self.get(call_id)
        if entry is None:
            return 0
        stale = [e for e in entry.value.outbox if e.written_at < older_than]
        if not stale:
            return 0
        published = 0
        for item in stale:
            if await self._in_stream(item):
                continue
            await self._bus.js.publish(
                item.subject, bytes(item.event), headers={"Nats-Msg-Id": item.event_id}
            )
            published += 1
            self.events_published += 1
            log.warning("call_store.outbox_recovered", call_id=call_id, event_id=item.event_id)
        await self._remove_from_outbox(call_id, {e.event_id for e in stale})
        return published

    async def _in_stream(self, item: OutboxEvent) -> bool:
        try:
            last = await self._bus.js.get_last_msg(subjects.CALL_EVENTS_STREAM, item.subject)
        except nats.js.errors.NotFoundError:
            return False
        headers = last.headers or {}
        return bool(headers.get("Nats-Msg-Id") == item.event_id)

    async def apply_and_publish(self, call_id: str, transition: Transition) -> Outcome | None:
        outcome = await self.apply(call_id, transition)
        if outcome is not None:
            await self.publish(outcome)
        return outcome

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


def _outbox_of(outcome: Outcome, now: float) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            subject=subjects.call_event(e.call_id, e.subject_name),
            event_id=e.event_id,
            written_at=now,
            event=msgspec.Raw(encode(e)),
        )
        for e in outcome.events
    ]
