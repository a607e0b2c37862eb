"""The node's packet transport on stand-ins for aiortc's DTLS/ICE objects (no sockets)."""

from types import SimpleNamespace as NS
from typing import Any

from media_node.transport import PacketTransport, TransportStats


class Sock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return 0

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)


class Tx:
    def protect(self, plain: bytes) -> bytes:
        return plain

    def protect_rtcp(self, plain: bytes) -> bytes:
        return plain


class Protocol:
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append(data)


RTCP = b"\x81\xc9" + b"\0" * 6


def test_a_transport_asked_to_send_before_its_keys_exist_sends_once_they_do() -> None:
    sock = Sock()
    conn = NS(_nominated={}, _protocols=[])
    dtls = NS(transport=NS(_connection=conn), _rx_srtp=None, _tx_srtp=None, state="connecting")
    t = PacketTransport(
        dtls, on_rtp=lambda d, a: None, on_rtcp=lambda d: None, stats=TransportStats()
    )
    conn._nominated[1] = NS(protocol=NS(transport=sock), remote_addr=("127.0.0.1", 5))
    assert not t.send_rtcp(RTCP)  # ICE chose a pair; DTLS is not done
    dtls._tx_srtp = Tx()
    dtls.state = "connected"
    assert t.send_rtcp(RTCP) and t.send_rtp(b"\x80" * 20)
    assert len(sock.sent) == 2


def test_a_datagram_too_short_for_srtp_is_counted_and_dropped() -> None:
    protocol = Protocol()
    conn = NS(_nominated={}, _protocols=[protocol])
    dtls = NS(transport=NS(_connection=conn), _rx_srtp=object(), _tx_srtp=None, state="connected")
    stats = TransportStats()
    PacketTransport(dtls, on_rtp=lambda d, a: None, on_rtcp=lambda d: None, stats=stats)
    protocol.datagram_received(b"\x80", ("127.0.0.1", 1))  # would read past its end
    assert stats.unprotect_failed == 1
