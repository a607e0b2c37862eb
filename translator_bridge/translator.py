"""The translation interface every backend implements, and the pair graph they share.

A :class:`Translator` knows which language pairs its backend has (discovered from the
backend at start and refreshed), finds a route between two languages (direct, or a chain
through other languages, e.g. French -> Spanish -> English), and translates text along it.
Failures are typed: :class:`NoPair` (no route), :class:`BackendFailed` (the backend
refused, answered nonsense or is unreachable) and :class:`TranslationTimeout`; the bridge
turns each into a caption marked untranslated, never into silence.
"""

import asyncio
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.captions import UntranslatedReason
from schemas.logs import get_logger

log = get_logger("translator_bridge.translator")


class TranslationError(Exception):
    """A translation that did not happen; ``reason`` goes into the caption."""

    reason: UntranslatedReason = "backend_failed"


class NoPair(TranslationError):
    """No route between the two languages in this backend."""

    reason: UntranslatedReason = "no_pair"


class BackendFailed(TranslationError):
    """The backend is unreachable, refused the request or answered nonsense."""

    reason: UntranslatedReason = "backend_failed"


class TranslationTimeout(TranslationError):
    """The backend did not answer in time."""

    reason: UntranslatedReason = "timeout"


@dataclass(frozen=True, slots=True)
class Route:
    """Backend language codes from source to target (two for a direct pair)."""

    codes: tuple[str, ...]

    @property
    def hops(self) -> int:
        return len(self.codes) - 1


@dataclass(frozen=True, slots=True)
class TranslatorCapabilities:
    """What a backend offers right now."""

    #: Direct pairs, in the backend's own codes.
    pairs: frozenset[tuple[str, str]] = frozenset()
    #: Routes may go through other languages (Apertium's ``/translateChain``).
    chains: bool = False
    #: Translates text while it is still being spoken (none of ours: they take segments).
    streaming: bool = False
    #: Pairs were discovered (False while the backend has not answered yet).
    known: bool = False


@dataclass
class PairGraph:
    """Directed pairs and shortest routes through them (breadth first, bounded hops)."""

    pairs: frozenset[tuple[str, str]] = frozenset()
    max_hops: int = 3
    #: Pivot languages tried first, best first (among routes of equal length).
    preferred: tuple[str, ...] = ()
    _routes: dict[tuple[str, str], Route | None] = field(default_factory=dict)

    @property
    def languages(self) -> frozenset[str]:
        return frozenset(code for pair in self.pairs for code in pair)

    def route(self, source: str, target: str) -> Route | None:
        key = (source, target)
        if key not in self._routes:
            self._routes[key] = self._search(source, target)
        return self._routes[key]

    def _search(self, source: str, target: str) -> Route | None:
        if source == target:
            return Route((source,))
        rank = {code: i for i, code in enumerate(self.preferred)}
        neighbours: dict[str, list[str]] = {}
        for a, b in sorted(self.pairs, key=lambda p: (p[0], rank.get(p[1], len(rank)), p[1])):
            neighbours.setdefault(a, []).append(b)
        previous: dict[str, str | None] = {source: None}
        frontier: deque[tuple[str, int]] = deque([(source, 0)])
        while frontier:
            node, depth = frontier.popleft()
            if depth >= self.max_hops:
                continue
            for nxt in neighbours.get(node, []):
                if nxt in previous:
                    continue
                previous[nxt] = node
                if nxt == target:
                    path = [nxt]
                    back: str | None = node
                    while back is not None:
                        path.append(back)
                        back = previous[back]
                    return Route(tuple(reversed(path)))
                frontier.append((nxt, depth + 1))
        return None


class Translator(ABC):
    """A translation backend (see the module docstring).

    Subclasses implement :meth:`_discover` (the backend's direct pairs), :meth:`codes_for`
    (our language code to the backend's candidates) and :meth:`_translate` (one route).
    """

    #: A label for logs and heartbeats.
    name: str = "translator"
    chains: bool = False
    #: Pivot languages (backend codes) a chain goes through first, best first.
    pivots: tuple[str, ...] = ()

    def __init__(self, *, max_hops: int = 3, refresh_s: float = 60.0) -> None:
        self.graph = PairGraph(max_hops=max_hops, preferred=self.pivots)
        self.refresh_s = refresh_s
        self.known = False
        self._discovered_at = 0.0
        self._attempted_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def capabilities(self) -> TranslatorCapabilities:
        return TranslatorCapabilities(pairs=self.graph.pairs, chains=self.chains, known=self.known)

    async def start(self) -> None:
        """Discover the pairs; a backend that is down is tried again later (never raises)."""
        await self.refresh(force=True)

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    async def refresh(self, *, force: bool = False, retry_s: float = 2.0) -> None:
        """Re-read the backend's pairs when stale (or never read; at most every ``retry_s``
        while the backend is down)."""
        now = time.monotonic()
        stale = now - self._discovered_at > self.refresh_s
        if not force and self.known and not stale:
            return
        if not force and now - self._attempted_at < retry_s:
            return
        async with self._lock:
            self._attempted_at = time.monotonic()
            try:
                pairs = frozenset(await self._discover())
            except TranslationError as exc:
                if self.known:
                    log.warning("translator.refresh_failed", backend=self.name, error=str(exc))
                else:
                    log.warning("translator.unavailable", backend=self.name, error=str(exc))
                return
            if pairs != self.graph.pairs or not self.known:
                log.info("translator.pairs", backend=self.name, pairs=len(pairs))
            self.graph = PairGraph(pairs=pairs, max_hops=self.graph.max_hops, preferred=self.pivots)
            self.known = True
            self._discovered_at = time.monotonic()

    def route(self, source: str, target: str) -> Route | None:
        """The shortest route for two of our language codes, or ``None``."""
        languages = self.graph.languages
        sources = [c for c in self.codes_for(source) if c in languages]
        targets = [c for c in self.codes_for(target) if c in languages]
        for s in sources:  # most specific first (``por_BR`` before ``por``)
            for t in targets:
                found = self.graph.route(s, t)
                if found is not None and (self.chains or found.hops <= 1):
                    return found
        return None

    async def translate(self, text: str, source: str, target: str) -> str:
        """``text`` from ``source`` to ``target`` (our codes); raises a TranslationError."""
        await self.refresh()
        if not self.known:
            raise BackendFailed(f"{self.name} has not answered yet")
        route = self.route(source, target)
        if route is None:
            raise NoPair(f"no {self.name} route {source} -> {target}")
        return await self._translate(text, route)

    @abstractmethod
    async def _discover(self) -> Iterable[tuple[str, str]]:
        """The backend's direct pairs; raise :class:`BackendFailed` when unreachable."""

    @abstractmethod
    def codes_for(self, language: str) -> list[str]:
        """Backend codes for one of ours, most specific first."""

    @abstractmethod
    async def _translate(self, text: str, route: Route) -> str:
        """Translate along a route the backend has."""
