"""The loopback UDP relay the network-trouble tests use (tests/support/udp_relay.py), on
real loopback sockets."""

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from tests.support.udp_relay import (
    Address,
    RelayFull,
    ThreadedUdpRelay,
    UdpRelay,
    rewrite_candidate,
    rewrite_candidates,
)
from tests.support.waiting import eventually, until


class Peer(asyncio.DatagramProtocol):
    """A UDP endpoint on loopback that keeps what it receives (and from whom)."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, Address]] = []
        self.changed = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.got.append((data, (addr[0], addr[1])))
        self.changed.set()

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, to: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def wait_count(self, n: int, timeout: float = 5.0) -> None:
        await until(lambda: len(self.got) >= n, self.changed, timeout)


async def peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    return protocol


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made = [await peer() for _ in range(3)]
    yield made
    for p in made:
        assert p.transport is not None
        p.transport.close()
        await asyncio.wait_for(p.closed, 5)


async def test_forwards_both_ways_with_one_upstream_per_source(peers: list[Peer]) -> None:
    target, a, b = peers
    async with UdpRelay() as relay:
        via = relay.relay_for(target.address, "alice")
        assert via[0] == "127.0.0.1" and via != target.address
        assert relay.relay_for(target.address, "alice") == via  # the same relay again
        a.send(b"from a", via)
        b.send(b"from b", via)
        await target.wait_count(2)
        sources = {data: src for data, src in target.got}
        # Each source has its own upstream socket: two distinct senders, neither the peer.
        assert sources[b"from a"] != sources[b"from b"]
        assert a.address not in sources.values() and b.address not in sources.values()
        target.send(b"to a", sources[b"from a"])
        target.send(b"to b", sources[b"from b"])
        await a.wait_count(1)
        await b.wait_count(1)
        assert a.got == [(b"to a", via)] and b.got == [(b"to b", via)]
        assert relay.forwarded() == 4 and relay.dropped() == 0
        assert relay.relays[0].label == "alice" and relay.relays[0].target == target.address


async def test_drop_loses_both_directions_of_matching_relays_only(peers: list[Peer]) -> None:
    target, a, b = peers
    async with UdpRelay() as relay:
        via_alice = relay.relay_for(target.address, "alice")
        via_bob = relay.relay_for(target.address, "bob")
        a.send(b"hello", via_alice)
        await target.wait_count(1)
        alice_upstream = target.got[0][1]

        relay.drop(lambda r: r.label == "alice")
        a.send(b"lost a->t", via_alice)
        target.send(b"lost t->a", alice_upstream)
        b.send(b"kept b->t", via_bob)
        await target.wait_count(2)  # bob's datagram went through
        await until(lambda: relay.dropped() == 2, relay.changed, 5)
        assert [d for d, _ in target.got] == [b"hello", b"kept b->t"]
        assert a.got == []
        alice = lambda r: r.label == "alice"  # noqa: E731
        assert relay.dropped(alice) == 2 and relay.forwarded(alice) == 1

        relay.restore()
        a.send(b"back", via_alice)
        await target.wait_count(3)
        target.send(b"back to a", alice_upstream)
        await a.wait_count(1)
        assert a.got == [(b"back to a", via_alice)]
        assert relay.forwarded(alice) == 3 and relay.dropped(alice) == 2


async def test_a_drop_covers_relays_made_during_it(peers: list[Peer]) -> None:
    target, a, _ = peers
    async with UdpRelay() as relay:
        relay.drop(lambda r: r.label == "alice")
        via = relay.relay_for(target.address, "alice")
        a.send(b"lost", via)
        await until(lambda: relay.dropped() == 1, relay.changed, 5)
        relay.restore()
        a.send(b"kept", via)
        await target.wait_count(1)
        assert [d for d, _ in target.got] == [b"kept"]


async def test_only_the_targets_replies_go_back(peers: list[Peer]) -> None:
    target, a, stranger = peers
    async with UdpRelay() as relay:
        via = relay.relay_for(target.address, "alice")
        a.send(b"hi", via)
        await target.wait_count(1)
        upstream = target.got[0][1]
        stranger.send(b"spoof", upstream)
        target.send(b"real", upstream)
        await a.wait_count(1)
        assert a.got == [(b"real", via)]


async def test_bounded_relays_and_upstreams(peers: list[Peer]) -> None:
    target, a, b = peers
    async with UdpRelay(max_relays=2, max_upstreams=1) as relay:
        via = relay.relay_for(target.address, "one")
        relay.relay_for(target.address, "two")
        with pytest.raises(RelayFull):
            relay.relay_for(target.address, "three")
        a.send(b"first source", via)
        await target.wait_count(1)
        b.send(b"second source", via)
        await until(lambda: relay.relays[0].refused == 1, relay.changed, 5)
        assert [d for d, _ in target.got] == [b"first source"]
        with pytest.raises(ValueError):
            relay.relay_for(("::1", 9), "v6")


async def test_close_releases_every_socket_and_reader(peers: list[Peer]) -> None:
    target, a, b = peers
    relay = UdpRelay()
    via = relay.relay_for(target.address, "alice")
    a.send(b"1", via)
    b.send(b"2", via)
    await target.wait_count(2)
    assert relay.open_sockets == 3  # the listener and one upstream per source
    relay.close()
    assert relay.open_sockets == 0
    relay.close()  # idempotent
    with pytest.raises(RuntimeError):
        relay.relay_for(target.address, "alice")
    # The relay's port is free again: nothing listens there any more.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(via)
    finally:
        probe.close()


def test_threaded_relay_forwards_while_the_caller_blocks() -> None:
    """The form the browser test uses: relaying on its own thread."""
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        target.bind(("127.0.0.1", 0))
        source.bind(("127.0.0.1", 0))
        target.settimeout(5)
        source.settimeout(5)
        with ThreadedUdpRelay() as relay:
            via = relay.relay_for(target.getsockname(), "alice")
            source.sendto(b"ping", via)
            data, upstream = target.recvfrom(100)
            assert data == b"ping"
            target.sendto(b"pong", upstream)
            assert source.recvfrom(100) == (b"pong", via)
            relay.drop(lambda r: r.label == "alice")
            source.sendto(b"lost", via)
            asyncio.run(_wait_dropped(relay))
            relay.restore()
            assert relay.forwarded() == 2
            assert [r.label for r in relay.matching(lambda r: True)] == ["alice"]
        assert relay.relay.open_sockets == 0
    finally:
        target.close()
        source.close()


async def _wait_dropped(relay: ThreadedUdpRelay) -> None:
    await eventually(lambda: relay.relay.dropped() == 1, timeout=5)


def test_candidates_point_at_the_relay_and_the_rest_are_removed() -> None:
    sdp = (
        "v=0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:1 1 udp 2122260223 192.0.2.2 50000 typ host generation 0\r\n"
        "a=candidate:2 1 tcp 1518280447 192.0.2.2 9 typ host tcptype active\r\n"
        "a=candidate:3 1 udp 2122262783 fd00::2 50001 typ host\r\n"
        "a=candidate:4 1 udp 2122260223 1f0e.local 50002 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    seen: list[Address] = []

    def via(target: Address) -> Address:
        seen.append(target)
        return ("127.0.0.1", 40000)

    out = rewrite_candidates(sdp, via)
    assert seen == [("192.0.2.2", 50000)]
    assert out == (
        "v=0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host generation 0\r\n"
        "a=end-of-candidates\r\n"
    )
    assert (
        rewrite_candidate("candidate:1 1 UDP 2122260223 10.0.0.1 5 typ host", via)
        == "candidate:1 1 UDP 2122260223 127.0.0.1 40000 typ host"
    )
    assert rewrite_candidate("candidate:", via) is None
