"""The archive writer's memory of calls: when a remembered log may stand for the log."""

from datetime import UTC, datetime

from gateway.archive.call_cache import CallCache
from gateway.archive.projection import Sequenced
from gateway.archive.repository import LogCount
from schemas.call_events import CallStatusChanged

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def ev(call: str, stream_seq: int) -> Sequenced:
    event = CallStatusChanged(
        call_id=call,
        event_id=f"{call}-e{stream_seq}",
        seq=stream_seq,
        occurred_at=T0,
        from_status="initiated",
        to_status="active",
    )
    return Sequenced(stream_seq, event, T0)


def held(*stream_seqs: int) -> LogCount:
    """What MongoDB would count of a log holding events at these stream sequences."""
    return LogCount(len(stream_seqs), sum(stream_seqs))


def test_a_remembered_log_plus_what_was_just_logged_is_the_log_when_the_count_agrees() -> None:
    cache = CallCache(max_events=100)
    cache.put("c", [ev("c", 1), ev("c", 2)], {})
    log = cache.extended("c", [ev("c", 5), ev("c", 4)], [], count=held(1, 2, 4, 5))
    assert log is not None and [s.stream_seq for s in log] == [1, 2, 4, 5]


def test_a_count_above_it_means_another_writer_logged_events_of_the_call() -> None:
    cache = CallCache(max_events=100)
    cache.put("c", [ev("c", 1), ev("c", 2)], {})
    assert cache.extended("c", [ev("c", 4)], [], count=held(1, 2, 3, 4)) is None
    assert cache.extended("c", [], [], count=held(1, 2, 3)) is None
    assert cache.extended("c", [], [], count=held(1, 2)) is not None


def test_a_redelivered_event_it_never_saw_means_it_cannot_know_the_log() -> None:
    cache = CallCache(max_events=100)
    cache.put("c", [ev("c", 1), ev("c", 2)], {})
    assert cache.extended("c", [], ["c-e2"], count=held(1, 2)) is not None
    # logged by someone else (count agrees by chance if this writer trusted it blindly)
    assert cache.extended("c", [], ["c-e3"], count=held(1, 2)) is None


def test_a_log_that_lost_events_and_gained_as_many_is_not_taken_for_whole() -> None:
    """A database restored under the writer: event 2 is gone, 9 came from elsewhere."""
    cache = CallCache(max_events=100)
    cache.put("c", [ev("c", 1), ev("c", 2)], {})
    assert cache.extended("c", [ev("c", 5)], [], count=held(1, 5, 9)) is None


def test_an_event_logged_out_of_stream_order_is_put_in_its_place() -> None:
    cache = CallCache(max_events=100)
    cache.put("c", [ev("c", 1), ev("c", 7)], {})
    log = cache.extended("c", [ev("c", 3)], [], count=held(1, 3, 7))
    assert log is not None and [s.stream_seq for s in log] == [1, 3, 7]


def test_an_unknown_call_is_not_known() -> None:
    assert CallCache(max_events=100).extended("c", [ev("c", 1)], [], count=held(1)) is None


def test_the_least_recently_folded_calls_go_first_past_the_bounds() -> None:
    cache = CallCache(max_events=5, max_calls=2)
    cache.put("a", [ev("a", 1), ev("a", 2)], {})
    cache.put("b", [ev("b", 1)], {})
    cache.put("a", [ev("a", 1), ev("a", 2), ev("a", 3)], {})  # refolded: most recent now
    cache.put("c", [ev("c", 1)], {})  # three calls: b, the oldest, goes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.events == 4
    cache.put("d", [ev("d", 1), ev("d", 2)], {})  # 6 events > 5 and 3 calls: a goes
    assert cache.get("a") is None and len(cache) == 2 and cache.events == 3


def test_a_call_longer_than_the_bound_is_not_remembered() -> None:
    cache = CallCache(max_events=2)
    cache.put("a", [ev("a", 1)], {})
    cache.put("a", [ev("a", 1), ev("a", 2), ev("a", 3)], {})
    assert cache.get("a") is None and cache.events == 0
    assert CallCache(max_events=0).get("a") is None
