"""What the archive writer remembers of the calls it folded lately.

For each call: its log as last folded (so a batch need not read the whole log back from
MongoDB, which was most of the archive's time) and its documents as last written (so an
unchanged one is not written again). Bounded by calls and by logged events, least recently
used first out.

A remembered log is only a candidate. The writer uses it only when it accounts for every
event MongoDB holds for the call (see :meth:`CallCache.extended`): another instance sharing
the work, or a message redelivered after a failure, may have logged events this writer never
saw, and then it reads the log back as before.
"""

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.archive.projection import Sequenced
from gateway.archive.repository import LogCount

#: Calls remembered at most.
MAX_CALLS = 2048


@dataclass(slots=True)
class CachedCall:
    """One call as this writer last folded and wrote it."""

    #: The log folded, in stream order.
    log: list[Sequenced]
    #: The event ids in ``log``.
    ids: frozenset[str]
    #: ``"collection/_id"`` -> the document as last written (JSON bytes).
    written: dict[str, bytes] = field(default_factory=dict)
    #: The sum of the stream sequences in ``log`` (see :class:`LogCount`).
    stream_seq_sum: int = 0


class CallCache:
    """Calls folded lately, least recently used first out."""

    def __init__(self, *, max_events: int, max_calls: int = MAX_CALLS) -> None:
        self.max_events = max_events
        self.max_calls = max_calls
        self._calls: OrderedDict[str, CachedCall] = OrderedDict()
        self._events = 0

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def events(self) -> int:
        """Logged events held, over every call."""
        return self._events

    def get(self, call_id: str) -> CachedCall | None:
        return self._calls.get(call_id)

    def extended(
        self,
        call_id: str,
        logged: Iterable[Sequenced],
        others: Iterable[str],
        count: LogCount,
    ) -> list[Sequenced] | None:
        """The call's whole log, without reading it, or ``None`` if this writer cannot
        know it.

        ``logged``: the batch's events this writer has just logged itself, each once (so
        they are in MongoDB exactly as given). ``others``: the ids of the batch's events
        that were already logged (redeliveries). ``count``: what MongoDB holds for the
        call, counted after this writer's insert. The remembered log plus ``logged`` is the
        whole log when it holds every redelivered id and exactly ``count.events`` events:
        every event in it is in MongoDB, so if MongoDB held one more, the count would be
        higher. The sum of stream sequences must agree too, so a log that lost events under
        the writer (a database restored from a backup) is not taken for whole because as
        many others were logged since.
        """
        known = self._calls.get(call_id)
        if known is None or not known.ids.issuperset(others):
            return None
        new = [s for s in logged if s.event.event_id not in known.ids]
        if len(known.ids) + len(new) != count.events:
            return None
        if known.stream_seq_sum + sum(s.stream_seq for s in new) != count.stream_seq_sum:
            return None
        if not new:
            return known.log
        last = known.log[-1].stream_seq if known.log else 0
        if all(s.stream_seq > last for s in new):
            return [*known.log, *sorted(new, key=lambda s: s.stream_seq)]
        return sorted([*known.log, *new], key=lambda s: s.stream_seq)

    def put(self, call_id: str, log: list[Sequenced], written: dict[str, bytes]) -> None:
        """Remember a call as just folded and written; drop the least recently used past
        the bounds (a call with more events than the bound is not remembered at all)."""
        self.drop(call_id)
        if len(log) > self.max_events:
            return
        self._calls[call_id] = CachedCall(
            log=log,
            ids=frozenset(s.event.event_id for s in log),
            written=written,
            stream_seq_sum=sum(s.stream_seq for s in log),
        )
        self._events += len(log)
        while self._calls and (self._events > self.max_events or len(self) > self.max_calls):
            _, oldest = self._calls.popitem(last=False)
            self._events -= len(oldest.log)

    def drop(self, call_id: str) -> None:
        gone = self._calls.pop(call_id, None)
        if gone is not None:
            self._events -= len(gone.log)
