"""The archive's fold: pure, ordered by revision, indifferent to arrival order and repeats."""

import random

import msgspec

from gateway.archive.projection import Folded, Sequenced, fold, in_order
from schemas.call_events import AnyCallEvent, RingEnded
from tests.support.recorded_call import recorded_call


def log_of(events: list[AnyCallEvent]) -> list[Sequenced]:
    return [Sequenced(i + 1, e) for i, e in enumerate(events)]


def plain(folded: Folded) -> object:
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
    missing = [e for e in events if e.seq != 5]
    ordered, pending = in_order(log_of(missing))
    assert [e.seq for e in ordered] == [1, 2, 3, 4]
    assert pending == len(rec.revised) - 5
    folded = fold(log_of(missing))
    assert folded.session is not None and folded.session.status == "ringing"
    assert folded.session.pending_events == pending


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
