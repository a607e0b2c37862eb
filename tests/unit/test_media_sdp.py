"""The announced address rewrites only what a browser must reach."""

from media_node.sdp import announce_address

SDP = "\r\n".join(
    [
        "v=0",
        "c=IN IP4 10.0.0.5",
        "a=candidate:1 1 udp 2130706431 10.0.0.5 50001 typ host",
        "a=candidate:2 1 udp 2130706431 127.0.0.1 50002 typ host",
        "a=candidate:3 1 udp 2130706431 fe80::1 50003 typ host",
        "a=candidate:4 1 udp 1694498815 198.51.100.9 50001 typ srflx raddr 10.0.0.5 rport 50001",
        "a=candidate:5 1 udp 2130706431 abcd.local 50004 typ host",
        "a=end-of-candidates",
        "",
    ]
)


def test_host_candidates_get_the_public_address_and_keep_their_ports() -> None:
    out = announce_address(SDP, "203.0.113.7")
    assert "c=IN IP4 203.0.113.7" in out
    assert "a=candidate:1 1 udp 2130706431 203.0.113.7 50001 typ host" in out
    assert "a=candidate:2 1 udp 2130706431 203.0.113.7 50002 typ host" in out
    assert "fe80::1" not in out  # the other family cannot be reached at that address
    assert "198.51.100.9 50001 typ srflx" in out  # only host candidates are rewritten
    assert "abcd.local" in out and out.endswith("a=end-of-candidates\r\n")


def test_no_public_address_changes_nothing() -> None:
    assert announce_address(SDP, "") == SDP
