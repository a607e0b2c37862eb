"""A fix, for the test process's own ICE agents, of a race in aioice 0.13.

``Connection.get_component_candidates`` binds one UDP socket per host address, awaiting
each bind, and adds them to ``_protocols`` only once all are bound. A ``close()`` that runs
meanwhile (a test client leaving while its peer connection still gathers) closes the
sockets it can see and misses those: they stay open until the garbage collector finds
them, and ``filterwarnings = error`` then fails whichever later test was running
(``ResourceWarning: unclosed <socket ... type=2 ...>``, seen in CI).

The media node does not need this: a leg never closes its peer connection while a
negotiation step (gathering among them) is in hand (``media_node/leg.py``).
"""

from typing import Any

from aioice.ice import Connection

_original = Connection.get_component_candidates


async def _closing_what_close_missed(
    self: Any, component: int, addresses: list[str], timeout: int = 5
) -> Any:
    try:
        return await _original(self, component, addresses, timeout)
    finally:
        if getattr(self, "_closing", False):
            for protocol in list(self._protocols):
                await protocol.close()
            self._protocols.clear()


def install() -> None:
    """Patch ``aioice.Connection`` in this process (idempotent)."""
    Connection.get_component_candidates = _closing_what_close_missed  # type: ignore[method-assign]
