"""When the selector probes a media node, and when "no responders" means the node is gone."""

from gateway.selector.liveness import NodeProbes


def test_a_new_node_is_probed_at_once_then_every_interval() -> None:
    probes = NodeProbes(0.5)
    assert probes.due(["n1", "n2"], 10.0) == ["n1", "n2"]
    assert probes.result("n1", "answered", 10.0) is False
    assert probes.result("n2", "answered", 10.0) is False
    assert probes.due(["n1", "n2"], 10.4) == []
    assert probes.next_at(10.4) == 10.5
    assert probes.due(["n1", "n2"], 10.5) == ["n1", "n2"]
    assert probes.sent == 4


def test_two_no_responders_in_a_row_confirm_death_one_does_not() -> None:
    probes = NodeProbes(0.5, retry_s=0.2, misses=2)
    probes.due(["n1"], 0.0)
    assert probes.result("n1", "no_responders", 0.0) is False
    # The retry comes sooner than the interval.
    assert probes.due(["n1"], 0.1) == []
    assert probes.due(["n1"], 0.2) == ["n1"]
    assert probes.result("n1", "no_responders", 0.2) is True
    assert probes.confirmed_dead == 1
    # Forgotten: a node that comes back starts afresh.
    assert probes.due(["n1"], 0.3) == ["n1"]


def test_an_answer_or_a_timeout_between_misses_resets_the_count() -> None:
    for outcome in ("answered", "unanswered"):
        probes = NodeProbes(0.5, misses=2)
        probes.due(["n1"], 0.0)
        assert probes.result("n1", "no_responders", 0.0) is False
        assert probes.result("n1", outcome, 0.2) is False
        assert probes.result("n1", "no_responders", 0.7) is False
        assert probes.confirmed_dead == 0


def test_nodes_no_longer_known_are_dropped_and_zero_interval_disables() -> None:
    probes = NodeProbes(0.5)
    probes.due(["n1", "n2"], 0.0)
    probes.due(["n2"], 0.0)
    assert probes.next_at(0.0) == 0.0  # only n2 left, still due
    assert NodeProbes(0.0).enabled is False
    assert NodeProbes(0.5).next_at(3.0) == 3.5


def test_no_verdict_within_the_grace_after_the_selectors_own_reconnect() -> None:
    """A whole-bus restart: every node answers "no responders" until its subscriptions are
    back; the selector, just reconnected itself, must not move their calls."""
    probes = NodeProbes(0.5, retry_s=0.2, misses=2, reconnect_grace_s=3.0)
    probes.due(["n1"], 0.0)
    assert probes.result("n1", "no_responders", 0.0) is False
    probes.reconnected(0.1)
    for now in (0.2, 0.4, 1.0, 2.0, 3.0):
        assert probes.result("n1", "no_responders", now) is False
    # Not probed again before the grace is over.
    assert probes.due(["n1"], 3.0) == []
    assert probes.due(["n1"], 3.2) == ["n1"]
    # After it, a node that still does not answer (and does not beat) is dead as before.
    assert probes.result("n1", "no_responders", 3.2) is False
    assert probes.result("n1", "no_responders", 3.4) is True
    assert probes.confirmed_dead == 1


def test_a_node_that_beats_since_it_stopped_answering_is_not_dead() -> None:
    probes = NodeProbes(0.5, retry_s=0.2, misses=2)
    probes.due(["n1"], 10.0)
    assert probes.result("n1", "no_responders", 10.0, heard_at=9.0) is False
    # Its heartbeat came after the first miss: it is reconnecting, not gone.
    assert probes.result("n1", "no_responders", 10.2, heard_at=10.1) is False
    assert probes.result("n1", "no_responders", 10.4, heard_at=10.1) is False
    assert probes.confirmed_dead == 0
    # Silent since its first miss (the last beat before it), and not answering: dead.
    assert probes.result("n1", "no_responders", 10.6, heard_at=10.1) is True
