"""The test process's ICE agents close every socket they bound, also when closed while
still gathering (tests/support/aioice_race.py)."""

import asyncio

from aioice import Connection


async def test_a_connection_closed_while_gathering_leaves_no_socket_open() -> None:
    connection = Connection(ice_controlling=True, components=1)
    gathering = asyncio.ensure_future(connection.gather_candidates())
    await asyncio.sleep(0)  # the gather is now binding its first socket
    await connection.close()
    await gathering
    bound = [p for p in connection._protocols if p.transport is not None]
    assert not bound
    assert all(
        p.transport is None or p.transport.is_closing()
        for p in getattr(connection, "_protocols", [])
    )
