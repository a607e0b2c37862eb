"""Confirming that a media node is dead between its heartbeats (pure bookkeeping).

Heartbeats alone find a dead node only after ``selector_node_expiry_s`` of silence (6 s by
default: long enough that a node busy forwarding a large call is not taken for dead). A
crashed node process is noticed much sooner by NATS itself: its connection closes, the
server drops its subscriptions, and a request to ``media.rpc.<node>.*`` is answered "no
responders" at once. So the selector probes every node it knows, every ``interval_s``, with
an empty ``renew_leases`` request:

- an answer, an error reply or a timeout is *not* death (a busy node answers late; a host
  that vanished without closing its connection is left to the heartbeat expiry);
- "no responders" ``misses`` times in a row, ``retry_s`` apart, *and no heartbeat from the
  node since the first of them*, is: the node is forgotten and its calls are decided at
  once. A node reconnecting to another NATS server is briefly without subscriptions too:
  the second probe, and its heartbeats (they come again once it is back), keep that from
  moving its calls;
- for ``reconnect_grace_s`` after the selector's *own* reconnect no verdict is given: every
  node may be reconnecting at the same moment (a whole-bus restart) and answer "no
  responders" until nats-py has restored its subscriptions.

:class:`NodeProbes` only says which node to probe when and what an outcome means; the
selector service sends the requests.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

ProbeResult = Literal["answered", "no_responders", "unanswered"]


@dataclass
class _Probe:
    next_at: float
    misses: int = 0
    #: When the first "no responders" of the current run of them came.
    first_miss_at: float = 0.0


class NodeProbes:
    """When to probe each node, and when its silence means it is gone."""

    def __init__(
        self,
        interval_s: float,
        *,
        retry_s: float = 0.2,
        misses: int = 2,
        reconnect_grace_s: float = 3.0,
    ) -> None:
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.misses = max(1, misses)
        self.reconnect_grace_s = reconnect_grace_s
        self._quiet_until = float("-inf")
        self._probes: dict[str, _Probe] = {}
        self.sent = 0
        self.confirmed_dead = 0

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def due(self, node_ids: Iterable[str], now: float) -> list[str]:
        """The known nodes to probe now (nodes no longer known are forgotten)."""
        known = set(node_ids)
        for gone in [n for n in self._probes if n not in known]:
            del self._probes[gone]
        due = []
        for node_id in sorted(known):
            probe = self._probes.setdefault(node_id, _Probe(next_at=now))
            if probe.next_at <= now:
                due.append(node_id)
        self.sent += len(due)
        return due

    def next_at(self, now: float) -> float:
        """When the next probe is due (``now + interval_s`` when nothing is known)."""
        times = [p.next_at for p in self._probes.values()]
        return min(times) if times else now + self.interval_s

    def reconnected(self, now: float) -> None:
        """The selector's own connection came back: no verdict for ``reconnect_grace_s``,
        and the misses counted before it do not count."""
        self._quiet_until = now + self.reconnect_grace_s
        for probe in self._probes.values():
            probe.misses = 0

    def result(
        self, node_id: str, outcome: ProbeResult, now: float, *, heard_at: float | None = None
    ) -> bool:
        """Record a probe's outcome; True when the node must now be taken for dead.

        ``heard_at``: when the node's last heartbeat came (``None``: never, or unknown).
        """
        probe = self._probes.setdefault(node_id, _Probe(next_at=now))
        if outcome != "no_responders":
            probe.misses = 0
            probe.next_at = now + self.interval_s
            return False
        if now < self._quiet_until:
            probe.misses = 0
            probe.next_at = max(self._quiet_until, now + self.retry_s)
            return False
        if probe.misses == 0:
            probe.first_miss_at = now
        if heard_at is not None and heard_at >= probe.first_miss_at:
            # It beat since it stopped answering: alive, its subscriptions on their way.
            probe.misses = 0
            probe.next_at = now + self.retry_s
            return False
        probe.misses += 1
        if probe.misses >= self.misses:
            del self._probes[node_id]
            self.confirmed_dead += 1
            return True
        probe.next_at = now + self.retry_s
        return False
