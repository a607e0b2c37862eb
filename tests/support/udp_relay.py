"""A userspace UDP relay on loopback: network trouble for one participant, on demand.

No network namespaces or firewall rules (CI may lack CAP_NET_ADMIN): a test rewrites the
ICE candidates a peer receives to addresses of this relay, so that peer's media can only
flow through it, and then :meth:`UdpRelay.drop` loses every datagram of the relays that
involve one participant (both directions) until :meth:`UdpRelay.restore`.

- :meth:`UdpRelay.relay_for` returns a loopback ``(host, port)`` that forwards to a target
  (one relay per ``(label, target)``; asking again returns the same address). The label
  records who asked for it, so a drop can pick "everything involving Alice".
- For each distinct source address a relay opens its own upstream socket toward the target,
  so the target's replies (sent to that socket) go back to that source, as a NAT would.
- Bounded: at most ``max_relays`` relays and ``max_upstreams`` sources per relay (datagrams
  from further sources are counted as ``refused``); datagrams are read at most
  ``_READ_BURST`` at a time so one busy socket cannot starve the event loop.
- Plain non-blocking sockets watched with ``loop.add_reader``: no tasks, and
  :meth:`UdpRelay.close` removes every reader and closes every socket.

:class:`ThreadedUdpRelay` runs one on its own event loop in a thread, for synchronous tests
(Playwright's sync API) that must keep relaying while the test thread waits.
"""

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

Address = tuple[str, int]
T = TypeVar("T")

_MAX_DATAGRAM = 65_535
_READ_BURST = 64


class RelayFull(RuntimeError):
    """More relays were asked for than the relay allows (``max_relays``)."""


@dataclass
class Relay:
    """One relayed target: what a test sees of it."""

    label: str
    target: Address
    #: Where a peer sends to reach ``target`` (loopback).
    address: Address
    #: Datagrams passed on, both directions together.
    forwarded: int = 0
    #: Datagrams lost on purpose (a drop was on), both directions together.
    dropped: int = 0
    #: Datagrams from a source beyond ``max_upstreams`` (not forwarded).
    refused: int = 0
    #: Source address -> the upstream socket that speaks for it to ``target``.
    upstreams: dict[Address, socket.socket] = field(default_factory=dict, repr=False)
    listener: socket.socket | None = field(default=None, repr=False)


class UdpRelay:
    """See the module docstring. Use on one event loop (the one running when it is made)."""

    def __init__(self, host: str = "127.0.0.1", max_relays: int = 64, max_upstreams: int = 8):
        if ipaddress.ip_address(host).version != 4 or not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the relay listens on IPv4 loopback only, not {host}")
        self.host = host
        self.max_relays = max_relays
        self.max_upstreams = max_upstreams
        self.relays: list[Relay] = []
        #: Set on every datagram handled (forwarded, dropped or refused): wait on it.
        self.changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._dropping: Callable[[Relay], bool] | None = None
        self._closed = False

    # --- the test's side ----------------------------------------------------------------
    def relay_for(self, target: Address, label: str = "") -> Address:
        """A loopback address whose datagrams go to ``target`` (IPv4), and back."""
        if self._closed:
            raise RuntimeError("the relay is closed")
        host, port = target
        if ipaddress.ip_address(host).version != 4:
            raise ValueError(f"IPv4 targets only, not {host}")
        target = (host, int(port))
        for relay in self.relays:
            if relay.label == label and relay.target == target:
                return relay.address
        if len(self.relays) >= self.max_relays:
            raise RelayFull(f"already {len(self.relays)} relays (max_relays={self.max_relays})")
        listener = self._socket()
        relay = Relay(label=label, target=target, address=listener.getsockname(), listener=listener)
        self.relays.append(relay)
        self._loop.add_reader(listener.fileno(), self._from_source, relay)
        return relay.address

    def drop(self, predicate: Callable[[Relay], bool]) -> None:
        """Lose every datagram, both ways, of the relays for which ``predicate`` holds
        (checked per datagram, so relays made during the drop are covered too)."""
        self._dropping = predicate

    def restore(self) -> None:
        self._dropping = None

    def matching(self, predicate: Callable[[Relay], bool]) -> list[Relay]:
        return [r for r in self.relays if predicate(r)]

    def forwarded(self, predicate: Callable[[Relay], bool] = lambda _: True) -> int:
        return sum(r.forwarded for r in self.relays if predicate(r))

    def dropped(self, predicate: Callable[[Relay], bool] = lambda _: True) -> int:
        return sum(r.dropped for r in self.relays if predicate(r))

    def close(self) -> None:
        """Stop relaying: every reader removed, every socket closed (idempotent)."""
        self._closed = True
        for relay in self.relays:
            socks = [relay.listener, *relay.upstreams.values()]
            relay.listener = None
            relay.upstreams.clear()
            for sock in socks:
                if sock is not None:
                    self._loop.remove_reader(sock.fileno())
                    sock.close()

    @property
    def open_sockets(self) -> int:
        return sum((r.listener is not None) + len(r.upstreams) for r in self.relays)

    async def __aenter__(self) -> "UdpRelay":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # --- datagrams ----------------------------------------------------------------------
    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.host, 0))
        except OSError:
            sock.close()
            raise
        return sock

    def _lost(self, relay: Relay) -> bool:
        return self._dropping is not None and self._dropping(relay)

    def _from_source(self, relay: Relay) -> None:
        """A peer sent to the relay: on to the target from that peer's upstream socket."""
        listener = relay.listener
        if listener is None:
            return
        for data, source in _read(listener):
            self.changed.set()
            if self._lost(relay):
                relay.dropped += 1
                continue
            upstream = relay.upstreams.get(source)
            if upstream is None:
                if len(relay.upstreams) >= self.max_upstreams:
                    relay.refused += 1
                    continue
                upstream = self._socket()
                relay.upstreams[source] = upstream
                self._loop.add_reader(upstream.fileno(), self._from_target, relay, source)
            if _send(upstream, data, relay.target):
                relay.forwarded += 1

    def _from_target(self, relay: Relay, source: Address) -> None:
        """The target answered an upstream socket: back to the peer it speaks for."""
        upstream = relay.upstreams.get(source)
        listener = relay.listener
        if upstream is None or listener is None:
            return
        for data, sender in _read(upstream):
            self.changed.set()
            if sender != relay.target:
                continue  # only the target's replies go back
            if self._lost(relay):
                relay.dropped += 1
                continue
            if _send(listener, data, source):
                relay.forwarded += 1


def _read(sock: socket.socket) -> list[tuple[bytes, Address]]:
    got: list[tuple[bytes, Address]] = []
    for _ in range(_READ_BURST):
        try:
            data, sender = sock.recvfrom(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break  # e.g. ICMP port unreachable reported on the socket: the peer is gone
        got.append((data, (sender[0], sender[1])))
    return got


def _send(sock: socket.socket, data: bytes, to: Address) -> bool:
    try:
        sock.sendto(data, to)
    except OSError:
        return False  # a full buffer or an unreachable peer: UDP loses it, as a network would
    return True


def rewrite_candidates(sdp: str, via: Callable[[Address], Address]) -> str:
    """``sdp`` with every IPv4 UDP ``a=candidate`` line pointed at ``via((ip, port))`` and
    every other candidate (TCP, IPv6, mDNS names) removed, so the only way to reach the
    SDP's author is through the relay."""
    out: list[str] = []
    for line in sdp.splitlines(keepends=True):
        if not line.startswith("a=candidate:"):
            out.append(line)
            continue
        body = line.rstrip("\r\n")
        rewritten = rewrite_candidate(body, via)
        if rewritten is not None:
            out.append(rewritten + line[len(body) :])
    return "".join(out)


def rewrite_candidate(candidate: str, via: Callable[[Address], Address]) -> str | None:
    """One candidate (``candidate:...`` or ``a=candidate:...``) pointed at the relay, or None
    for one the relay cannot carry (not UDP, not IPv4)."""
    fields = candidate.split(" ")
    if len(fields) < 8 or fields[2].lower() != "udp":
        return None
    try:
        address = ipaddress.ip_address(fields[4])
    except ValueError:
        return None  # an mDNS name
    if address.version != 4:
        return None
    host, port = via((fields[4], int(fields[5])))
    fields[4], fields[5] = host, str(port)
    return " ".join(fields)


class ThreadedUdpRelay:
    """A :class:`UdpRelay` on its own event loop in a daemon thread, driven synchronously.

    Counters are read from the caller's thread (plain ints); everything that changes the
    relay runs on its loop and waits there for at most ``timeout`` seconds.
    """

    def __init__(self, max_relays: int = 64, max_upstreams: int = 8, timeout: float = 5.0):
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="udp-relay", daemon=True
        )
        self._thread.start()
        self.relay: UdpRelay = self._call(self._make(max_relays, max_upstreams))

    async def _make(self, max_relays: int, max_upstreams: int) -> UdpRelay:
        return UdpRelay(max_relays=max_relays, max_upstreams=max_upstreams)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    def _do(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self._call(run())

    def relay_for(self, target: Address, label: str = "") -> Address:
        return self._do(lambda: self.relay.relay_for(target, label))

    def drop(self, predicate: Callable[[Relay], bool]) -> None:
        self._do(lambda: self.relay.drop(predicate))

    def restore(self) -> None:
        self._do(self.relay.restore)

    def forwarded(self, predicate: Callable[[Relay], bool] = lambda _: True) -> int:
        return self._do(lambda: self.relay.forwarded(predicate))

    def dropped(self, predicate: Callable[[Relay], bool] = lambda _: True) -> int:
        return self._do(lambda: self.relay.dropped(predicate))

    def matching(self, predicate: Callable[[Relay], bool]) -> list[Relay]:
        return self._do(lambda: self.relay.matching(predicate))

    def close(self) -> None:
        """Close every socket on the loop, then stop and close the loop and its thread."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._do(self.relay.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout)
        self._loop.close()

    def __enter__(self) -> "ThreadedUdpRelay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
