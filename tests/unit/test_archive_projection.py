"""The archive's fold: pure, ordered by revision, indifferent to arrival order and repeats."""

import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import msgspec

from gateway.archive.projection import Folded, LoggedCallEvent, Sequenced, fold, in_order
from schemas.call_events import AnyCallEvent, CallEnded, CallEventEnvelope, RingEnded
from tests.support.recorded_call import recorded_call


def log_of(events: Sequence[LoggedCallEvent]) -> list[Sequenced]:
    return [Sequenced(i + 1, e) for i, e in enumerate(events)]


def plain(folded: Folded) -> list[Any]:
    """The documents, without ``version`` (the log's length, which a repeat changes)."""
    participants = sorted(folded.participants, key=lambda p: p.participant_id)
    history = sorted(folded.history, key=lambda h: h.principal_id)
    docs: list[msgspec.Struct | None] = [folded.session, *participants, *history]
    out = []
    for doc in docs:
        raw = msgspec.to_builtins(doc)
        raw.pop("version", None)
        out.append(raw)
    return out


def test_any_arrival_order_folds_to_the_same_documents() -> None:
    rec = recorded_call("order")
    expected = plain(fold(log_of(rec.events)))
    rng = random.Random(7)
    for _ in range(5):
        shuffled = list(rec.events)
        rng.shuffle(shuffled)
        assert plain(fold(log_of(shuffled))) == expected


def test_a_revision_counts_once_and_a_gap_holds_back_the_rest() -> None:
    rec = recorded_call("gap")
    events = list(rec.events)
    # The same revisions again later in the stream, under new event ids (a republished
    # outbox entry outside JetStream's de-duplication window).
    replayed = [
        *events,
        *(msgspec.structs.replace(e, event_id=f"x{i}") for i, e in enumerate(events[3:6])),
    ]
    assert plain(fold(log_of(replayed))) == plain(fold(log_of(events)))
    # A live call (its end not logged yet) waits for the missing revision.
    missing = [e for e in events if e.seq != 5 and not isinstance(e, CallEnded)]
    ordered, pending, skipped = in_order(log_of(missing))
    assert [e.seq for e in ordered] == [1, 2, 3, 4]
    assert pending == len(rec.revised) - 6 and skipped == []
    folded = fold(log_of(missing))
    assert folded.session is not None and folded.session.status == "ringing"
    assert folded.session.pending_events == pending


def test_once_the_call_ended_a_missing_revision_is_skipped_and_recorded() -> None:
    rec = recorded_call("ended-gap")
    complete = plain(fold(log_of(rec.events)))
    missing = [e for e in rec.events if e.seq != 5]
    folded = fold(log_of(missing))
    assert folded.session is not None and folded.session.status == "ended"
    assert folded.skipped == [5] and folded.session.missing_revisions == [5]
    assert folded.pending == 0 and folded.session.pending_events == 0
    # The revision arriving after all puts it in its place: the documents of a whole log.
    late = fold(log_of([*missing, next(e for e in rec.events if e.seq == 5)]))
    assert late.skipped == [] and plain(late) == complete


def test_a_live_call_skips_a_gap_after_the_deadline() -> None:
    rec = recorded_call("deadline")
    live = [e for e in rec.events if e.seq != 5 and not isinstance(e, CallEnded)]
    waiting = next(e for e in live if e.seq == 6)
    before = waiting.occurred_at + timedelta(seconds=59)
    after = waiting.occurred_at + timedelta(seconds=60)
    held = fold(log_of(live), now=before, gap_deadline_s=60)
    assert held.skipped == [] and held.pending == len(live) - 4 - _advisory(live)
    moved = fold(log_of(live), now=after, gap_deadline_s=60)
    assert moved.skipped == [5] and moved.pending == 0
    assert moved.session is not None and moved.session.seq == max(e.seq for e in live)
    # The wait counts in stream time (when the stream stored the event), not when it
    # happened at its producer.
    logged = [Sequenced(i + 1, e, stored_at=before) for i, e in enumerate(live)]
    assert fold(logged, now=after, gap_deadline_s=60).skipped == []
    assert fold(logged, now=before + timedelta(seconds=60), gap_deadline_s=60).skipped == [5]


def test_an_event_type_the_archive_does_not_know_is_a_revision_that_changes_nothing() -> None:
    rec = recorded_call("newer")
    complete = fold(log_of(rec.events))
    fifth = next(e for e in rec.events if e.seq == 5)
    # A newer gateway's event as revision 5 (the later ones move up by one).
    unknown = CallEventEnvelope(
        type="call.something_new",
        call_id=rec.call_id,
        event_id="newer-5",
        occurred_at=fifth.occurred_at,
        seq=5,
    )
    shifted = [msgspec.structs.replace(e, seq=e.seq + 1) if e.seq >= 5 else e for e in rec.events]
    folded = fold(log_of([*shifted, unknown]))
    assert folded.session is not None and folded.session.status == "ended"
    assert folded.pending == 0 and folded.skipped == []
    assert complete.session is not None and folded.session.seq == complete.session.seq + 1
    assert plain(folded)[1:] == plain(complete)[1:]  # participants and history unchanged
    # Decoding the same event's fields as an envelope is what the bus falls back to.
    raw = msgspec.json.encode({**msgspec.to_builtins(fifth), "type": "call.something_new"})
    assert msgspec.json.decode(raw, type=CallEventEnvelope).seq == 5


def _advisory(events: Sequence[AnyCallEvent]) -> int:
    return sum(1 for e in events if e.seq == 0)


def test_events_without_revisions_fold_in_stream_order() -> None:
    rec = recorded_call("legacy")
    legacy = [msgspec.structs.replace(e, seq=0) for e in rec.events]
    folded = fold(log_of(legacy))
    assert folded.session is not None and folded.session.status == "ended"
    assert plain(folded) != plain(fold(log_of(list(reversed(legacy)))))  # order matters here


def test_missed_means_rung_never_joined_and_not_declined() -> None:
    rec = recorded_call("missed")
    events = [
        msgspec.structs.replace(e, outcome="declined", user_ids=[rec.carol])
        if isinstance(e, RingEnded) and e.outcome == "missed"
        else e
        for e in rec.events
    ]
    history = {h.principal_id: h for h in fold(log_of(events)).history}
    assert not history[rec.carol].missed  # declined
    assert history[rec.dave].missed  # still ringing when the call ended
    assert history[rec.bob].took_part and not history[rec.bob].missed
    assert history[rec.guest].role == "participant" and history[rec.alice].role == "initiator"


def test_an_event_before_the_initiation_waits() -> None:
    rec = recorded_call("early")
    assert fold(log_of(rec.events[1:3])).session is None


def _versioned(folded: Folded) -> dict[str, tuple[int, bytes]]:
    """Each participant and history document: its version and its bytes without it."""
    out: dict[str, tuple[int, bytes]] = {}
    for doc, key in [
        *((p, f"p/{p.participant_id}") for p in folded.participants),
        *((h, f"h/{h.principal_id}") for h in folded.history),
    ]:
        raw = msgspec.to_builtins(doc)
        version = raw.pop("version")
        out[key] = (version, msgspec.json.encode(raw))
    return out


def test_a_document_keeps_its_version_exactly_as_long_as_no_event_changes_it() -> None:
    """For every two folds of a call's log, the shorter one first: a document's version
    never goes down, and it stays the same only if the document did (so the writer may skip
    it, and an older fold from another instance can never overwrite a newer document)."""
    rec = recorded_call("versions")
    folds = [_versioned(fold(log_of(rec.events[:n]))) for n in range(1, len(rec.events) + 1)]
    unchanged = changed = 0
    for i, older in enumerate(folds):
        for newer in folds[i + 1 :]:
            for key, (version, body) in older.items():
                assert key in newer
                new_version, new_body = newer[key]
                assert new_version >= version
                if new_version == version:
                    assert new_body == body, key
                    unchanged += 1
                elif new_body != body:
                    changed += 1
    assert unchanged > 0 and changed > 0  # both cases really happen in this call
    # The session's version is the log's length: a fuller log is a newer session.
    session = fold(log_of(rec.events)).session
    assert session is not None and session.version == len(rec.events)
