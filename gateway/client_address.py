"""The address of the client behind a request, believing only the proxies we run.

Behind a reverse proxy every request comes from the proxy's address, so a limit keyed on
the peer puts every client in one bucket. ``X-Forwarded-For`` names the hops, each proxy
appending the address it saw; only the entries added by proxies we trust are true, so the
client is the right-most address that is not one of our proxies (RFC 7239 section 7.4).
With no trusted proxy configured the header is ignored: anyone can write it.

Rate limits key on :meth:`ClientAddress.bucket`: an IPv6 client is its /64, because one
host is normally handed a whole /64 and can take a new address from it for every request.
"""

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

#: The IPv6 prefix one subscriber's host is normally given (RFC 6177), one rate bucket.
IPV6_BUCKET_PREFIX = 64


def _parse(value: str) -> Address | None:
    text = value.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    """Resolves the client address from the peer and ``X-Forwarded-For``."""

    def __init__(self, trusted: Sequence[Network]) -> None:
        self._trusted = tuple(trusted)

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address (as text); ``-`` when the peer is unknown."""
        if not peer:
            return "-"
        current = _parse(peer)
        if current is None or not self._trusted or not self._is_trusted(current):
            return peer
        hops = [h for h in (forwarded_for or "").split(",") if h.strip()]
        for hop in reversed(hops):
            address = _parse(hop)
            if address is None:
                return str(current)  # a garbled entry: stop at the last address we trust
            if not self._is_trusted(address):
                return str(address)
            current = address
        return str(current)

    def bucket(self, peer: str | None, forwarded_for: str | None) -> str:
        """The rate-limit key of the client: its IPv4 address, or its IPv6 /64 (an
        IPv4-mapped IPv6 address counts as the IPv4 address)."""
        client = self.resolve(peer, forwarded_for)
        address = _parse(client)
        if isinstance(address, IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            return str(IPv6Network((address, IPV6_BUCKET_PREFIX), strict=False))
        return str(address) if address is not None else client
