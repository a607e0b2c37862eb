"""The test process's ICE agents close every socket they bound, also when closed while
still gathering (tests/support/aioice_race.py)."""

import asyncio
from typing import Any

import pytest
from aioice import Connection


async def test_a_connection_closed_while_gathering_leaves_no_socket_open() -> None:
    loop = asyncio.get_running_loop()
    bind = loop.create_datagram_endpoint
    made: list[Any] = []

    async def spy(*args: Any, **kwargs: Any) -> Any:
        transport, protocol = await bind(*args, **kwargs)
        made.append(transport)
        return transport, protocol

    loop.create_datagram_endpoint = spy  # type: ignore[method-assign]
    try:
        connection = Connection(ice_controlling=True, components=1)
        gathering = asyncio.ensure_future(connection.gather_candidates())
        await asyncio.sleep(0)  # the gather is now binding its first socket
        await connection.close()
        await gathering
    finally:
        del loop.create_datagram_endpoint
    if not made:
        pytest.skip("no non-loopback address to gather on: the race cannot happen here")
    assert all(t.is_closing() for t in made)
