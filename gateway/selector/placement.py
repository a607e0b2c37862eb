"""Placement: which media node gets a call, from the nodes' own load reports (pure).

Media nodes announce themselves on ``media.node.heartbeat`` every few seconds. The table
keeps the last report of each and forgets a node that stops reporting (after
``expiry_s``): a dead node is never chosen. A call goes to the least loaded node that is
ready (not draining) and has room for everyone in it; once placed, a call stays on its node.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from schemas.media import MediaNodeHeartbeat


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """What placement knows of one node: its last report and when it came."""

    node_id: str
    ready: bool
    capacity: int
    free: int
    participants: int
    cpu_percent: float
    cpu_count: int
    seen_at: float

    @property
    def cpu_load(self) -> float:
        """CPU used, as a fraction of the node's cores (0..1)."""
        return self.cpu_percent / (100.0 * max(1, self.cpu_count))


def choose(nodes: Iterable[NodeLoad], *, needed: int, exclude: Sequence[str] = ()) -> str | None:
    """The least loaded ready node with room for ``needed`` more participants, or None.

    "Least loaded": the lower of CPU use and the share of capacity taken, whichever is
    higher (a node can be full of idle sessions or busy with a few heavy ones); ties go to
    the node with most room, then by id (deterministic).
    """
    fits = [n for n in nodes if n.ready and n.free >= needed and n.node_id not in exclude]
    if not fits:
        return None

    def load(n: NodeLoad) -> tuple[float, int, str]:
        taken = 1.0 - n.free / n.capacity if n.capacity > 0 else 1.0
        return (max(n.cpu_load, taken), -n.free, n.node_id)

    return min(fits, key=load).node_id


#: Node ids a table remembers having heard from (far more than a deployment has).
_MAX_HEARD = 10_000


class NodeTable:
    """The live media nodes, from their heartbeats (time is passed in)."""

    def __init__(self, expiry_s: float, *, started_at: float = 0.0) -> None:
        self.expiry_s = expiry_s
        #: Until then the table may lack nodes that are alive (they have not reported yet).
        self.warm_at = started_at + expiry_s
        self._nodes: dict[str, NodeLoad] = {}
        self._heard: set[str] = set()

    def warm(self, now: float) -> bool:
        """Whether every live node has had time to report since the table started."""
        return now >= self.warm_at

    def heard_of(self, node_id: str | None) -> bool:
        """Whether this table ever had a report from ``node_id`` (a node it heard from and
        lost is known to be gone; one it never heard from may just not have reported yet)."""
        return node_id is not None and node_id in self._heard

    def update(self, beat: MediaNodeHeartbeat, now: float) -> None:
        if len(self._heard) < _MAX_HEARD:
            self._heard.add(beat.node_id)
        self._nodes[beat.node_id] = NodeLoad(
            node_id=beat.node_id,
            ready=beat.state == "ready",
            capacity=beat.capacity,
            free=beat.free,
            participants=beat.participants,
            cpu_percent=beat.cpu_percent,
            cpu_count=beat.cpu_count,
            seen_at=now,
        )

    def live(self, now: float) -> list[NodeLoad]:
        """Nodes heard from within ``expiry_s`` (ready or draining); forgets the others."""
        for node_id in [k for k, n in self._nodes.items() if now - n.seen_at > self.expiry_s]:
            del self._nodes[node_id]
        return list(self._nodes.values())

    def seen_at(self, node_id: str) -> float | None:
        """When the node's last heartbeat came (``None``: not known)."""
        node = self._nodes.get(node_id)
        return node.seen_at if node is not None else None

    def forget(self, node_id: str) -> None:
        """Drop a node known to be dead (a later report brings it back)."""
        self._nodes.pop(node_id, None)

    def reserve(self, node_id: str, participants: int) -> None:
        """Count a placement against a node until its next report (two calls placed in
        the same second do not both see the same free room)."""
        node = self._nodes.get(node_id)
        if node is not None:
            self._nodes[node_id] = NodeLoad(
                node_id=node.node_id,
                ready=node.ready,
                capacity=node.capacity,
                free=max(0, node.free - participants),
                participants=node.participants + participants,
                cpu_percent=node.cpu_percent,
                cpu_count=node.cpu_count,
                seen_at=node.seen_at,
            )
