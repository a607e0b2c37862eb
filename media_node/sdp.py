"""Codec pinning and offer checks for the two legs of a session."""

from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender

#: What the SFU forwards: it cannot transcode, so both legs must use exactly these.
PINNED = {"audio": ("audio/opus",), "video": ("video/vp8", "video/rtx")}


def pinned_codecs(kind: str, *, sending: bool) -> list[Any]:
    """Opus for audio; VP8 (with RTX for retransmissions) for video."""
    caps = (RTCRtpSender if sending else RTCRtpReceiver).getCapabilities(kind)
    if caps is None:
        return []
    wanted = PINNED[kind]
    return [c for c in caps.codecs if c.mimeType.lower() in wanted]


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
