"""The outbox of a call, pure: stamping a change's events and commands, trimming it.

A change's events get the call's next revisions (``seq`` 1, 2, 3 ... per call), an event id
derived from the call and that revision, and the change's time; they and the change's
commands become :class:`~schemas.call_state.OutboxEntry` written in the same
compare-and-set as the new state. Because the event id is derived from ``(call_id, seq)``,
every writer that republishes an entry uses the same JetStream de-duplication id.
"""

from datetime import UTC, datetime

import msgspec

from schemas import subjects
from schemas.call_commands import CallCommand
from schemas.call_events import CallEvent
from schemas.call_state import CallState, OutboxEntry
from schemas.codec import encode

_replace = msgspec.structs.replace

#: A call's outbox never holds more; past it, changes are refused (never dropped): the
#: entries are unpublished, so publishing is broken and the state must not run ahead.
MAX_OUTBOX = 500


class OutboxFull(Exception):
    """The call's outbox is full: its events are not being published."""


def event_id(call_id: str, seq: int) -> str:
    """The id (and de-duplication id) of a call's ``seq``-th event."""
    return f"{call_id}-{seq}"


def stamp(
    state: CallState,
    events: list[CallEvent],
    commands: list[CallCommand],
    *,
    base: CallState,
    now: float,
) -> tuple[CallState, list[CallEvent]]:
    """The state to write (revision advanced, entries appended) and the stamped events.

    ``base`` is the state the change was computed from (its ``seq`` and outbox are the
    current ones); ``state`` is the transition's result.
    """
    at = datetime.fromtimestamp(now, UTC)
    seq = base.seq
    stamped: list[CallEvent] = []
    entries: list[OutboxEntry] = []
    for event in events:
        seq += 1
        e = _replace(event, seq=seq, event_id=event_id(event.call_id, seq), occurred_at=at)
        stamped.append(e)
        entries.append(
            OutboxEntry(
                kind="event",
                seq=seq,
                subject=subjects.call_event(e.call_id, e.subject_name),
                message_id=e.event_id,
                written_at=now,
                data=msgspec.Raw(encode(e)),
            )
        )
    for command in commands:
        c = _replace(command, issued_at=at)
        entries.append(
            OutboxEntry(
                kind="command",
                seq=seq,
                subject=subjects.call_command(c.call_id, c.subject_name),
                message_id=c.command_id,
                written_at=now,
                data=msgspec.Raw(encode(c)),
            )
        )
    outbox = [*base.outbox, *entries]
    if len(outbox) > MAX_OUTBOX:
        raise OutboxFull(state.call_id)
    return _replace(state, seq=seq, outbox=outbox, updated_at=now), stamped


def without(outbox: list[OutboxEntry], message_ids: set[str]) -> list[OutboxEntry]:
    """The outbox less the entries already published."""
    return [e for e in outbox if e.message_id not in message_ids]
