"""The announced address rewrites only what a browser must reach."""

import pytest

from media_node.sdp import MAX_CANDIDATES, UnusableSdp, announce_address, check_description

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


# --- what a client's description must carry before aiortc is given it ----------------

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=sendonly",
        "a=rtpmap:111 opus/48000/2",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:0123456789abcdef0123456789",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=mid:1",
        "a=sendonly",
        "a=rtpmap:96 VP8/90000",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:0123456789abcdef0123456789",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "",
    ]
)


def _without(prefix: str) -> str:
    return "\r\n".join(line for line in OFFER.split("\r\n") if not line.startswith(prefix))


def test_a_complete_description_passes_with_its_counts() -> None:
    assert check_description(OFFER) == {"audio": 1, "video": 1}


@pytest.mark.parametrize(
    ("sdp", "problem"),
    [
        # aiortc accepts these in setRemoteDescription and fails later in a background
        # task (a traceback in the log and a half-open peer connection) or in createAnswer.
        (_without("a=fingerprint"), "DTLS fingerprint"),
        (_without("a=setup"), "DTLS fingerprint or setup"),
        (_without("a=ice-ufrag"), "ICE credentials"),
        (OFFER.replace("a=mid:1", "a=mid:0"), "share a mid"),
        (
            OFFER + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n",
            "only audio and video",
        ),
        (
            OFFER
            + "".join(
                f"a=candidate:{i} 1 udp 2130706431 192.0.2.{i} 5000 typ host\r\n"
                for i in range(MAX_CANDIDATES + 1)
            ),
            "ICE candidates",
        ),
        (OFFER.replace("a=mid:1", "a=mid:1\r\na=candidate:x"), "unparsable"),
    ],
)
def test_descriptions_aiortc_would_choke_on_later_are_refused(sdp: str, problem: str) -> None:
    with pytest.raises(UnusableSdp, match=problem):
        check_description(sdp)
