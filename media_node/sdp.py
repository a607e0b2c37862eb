"""Codec pinning, offer checks and the announced address for the two legs of a session."""

import ipaddress
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc import sdp as aiortc_sdp

#: What the SFU forwards: it cannot transcode, so both legs must use exactly these.
PINNED = {"audio": ("audio/opus",), "video": ("video/vp8", "video/rtx")}


def pinned_codecs(kind: str, *, sending: bool) -> list[Any]:
    """Opus for audio; VP8 (with RTX for retransmissions) for video."""
    caps = (RTCRtpSender if sending else RTCRtpReceiver).getCapabilities(kind)
    if caps is None:
        return []
    wanted = PINNED[kind]
    return [c for c in caps.codecs if c.mimeType.lower() in wanted]


#: ICE candidates accepted per description. A browser offers a handful; each remote
#: candidate makes the node send connectivity checks to that address, so an unbounded list
#: would turn the node into a STUN sprayer toward addresses of the client's choosing.
MAX_CANDIDATES = 32


class UnusableSdp(ValueError):
    """A client's description the node will not apply (the message names no identity)."""


def check_description(sdp: str) -> dict[str, int]:
    """Reject what aiortc would accept but then fail on later, outside any RPC.

    aiortc's ``setRemoteDescription`` takes a media section without DTLS fingerprint or
    ``a=setup`` and only fails in its background connect task (a traceback in the log, a
    peer connection stuck half-open); duplicate mids fail in ``createAnswer``; a data
    channel section starts an SCTP association nobody reads. Returns the m-line count
    per kind (only ``audio`` and ``video`` are allowed).
    """
    try:
        parsed = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever its string handling hits
        raise UnusableSdp(f"unparsable SDP ({type(exc).__name__})") from None
    counts: dict[str, int] = {}
    mids: set[str | None] = set()
    candidates = 0
    for media in parsed.media:
        if media.kind not in ("audio", "video"):
            raise UnusableSdp("only audio and video m-lines are accepted")
        counts[media.kind] = counts.get(media.kind, 0) + 1
        mid = media.rtp.muxId
        if mid in mids:
            raise UnusableSdp("two m-lines share a mid")
        mids.add(mid)
        if media.dtls is None or not media.dtls.fingerprints:
            raise UnusableSdp("a media section lacks a DTLS fingerprint or setup role")
        ice = media.ice
        if ice is None or not ice.usernameFragment or not ice.password:
            raise UnusableSdp("a media section lacks ICE credentials")
        candidates += len(media.ice_candidates)
    if candidates > MAX_CANDIDATES:
        raise UnusableSdp(f"more than {MAX_CANDIDATES} ICE candidates")
    # Cross-check with a plain line count: aiortc's parser and ours must agree.
    if counts != count_media(sdp):
        raise UnusableSdp("m-lines the parser could not read")
    return counts


def count_media(sdp: str) -> dict[str, int]:
    """How many m-lines of each kind an SDP carries."""
    counts: dict[str, int] = {}
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def primary_payload_type(transceiver: Any) -> int | None:
    """The payload type of the negotiated media codec (the first non-RTX one)."""
    for codec in transceiver._codecs:
        if codec.mimeType.lower() != f"{transceiver.kind}/rtx":
            return int(codec.payloadType)
    return None


def negotiated_mime(transceiver: Any) -> str | None:
    codecs = transceiver._codecs
    return str(codecs[0].mimeType).lower() if codecs else None


def announce_address(sdp: str, public_ip: str) -> str:
    """Rewrite the node's host candidates to ``public_ip`` (a 1:1 NAT or a host port map).

    aiortc offers a host candidate for every local interface; behind NAT those addresses are
    unreachable for browsers. Like mediasoup's ``announcedIp``, candidates of the announced
    address family keep their ports and get the public address; candidates of the other
    family are dropped (their sockets cannot be reached at that address). With no
    ``public_ip`` the description is returned unchanged.
    """
    if not public_ip:
        return sdp
    family = ipaddress.ip_address(public_ip).version
    kept: list[str] = []
    for original in sdp.split("\r\n"):
        line = original
        if line.startswith("a=candidate:"):
            fields = line.split(" ")
            # a=candidate:<foundation> <component> <transport> <priority> <addr> <port> typ <type>
            try:
                version = ipaddress.ip_address(fields[4]).version
            except (IndexError, ValueError):
                kept.append(original)  # an mDNS name or something unexpected: leave it
                continue
            if version != family:
                continue
            if "typ" in fields and fields[fields.index("typ") + 1] == "host":
                fields[4] = public_ip
            line = " ".join(fields)
        elif line.startswith("c=IN IP"):
            line = f"c=IN IP{family} {public_ip}"
        kept.append(line)
    return "\r\n".join(kept)
