"""RTCP the node reads and writes (RFC 3550, 4585, REMB), built on aiortc's packet classes.

RTCP is a few packets per second per leg, so aiortc's parser and serialisers are used as
they are; only NACK is written here (aiortc's writer does not handle sequence wrap-around).
"""

import struct
import time
from collections.abc import Iterable
from typing import Any

from aiortc import rtp as aiortc_rtp

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01

Rtcp = Any  # one of aiortc.rtp's Rtcp*Packet dataclasses


def ntp_from_unix(unix_s: float) -> int:
    """64-bit NTP timestamp of a Unix time."""
    seconds = int(unix_s)
    fraction = int((unix_s - seconds) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds + NTP_EPOCH_OFFSET) << 32) | fraction


def unix_from_ntp(ntp: int) -> float:
    return (ntp >> 32) - NTP_EPOCH_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


def now_ntp() -> int:
    return ntp_from_unix(time.time())


def middle_32(ntp: int) -> int:
    """The LSR field of a receiver report: the middle 32 bits of an NTP timestamp."""
    return (ntp >> 16) & 0xFFFFFFFF


def parse(data: bytes) -> list[Rtcp]:
    """Every packet of a compound RTCP datagram (raises ``ValueError`` on garbage)."""
    packets: list[Rtcp] = aiortc_rtp.RtcpPacket.parse(data)
    return packets


def is_nack(packet: Rtcp) -> bool:
    return (
        isinstance(packet, aiortc_rtp.RtcpRtpfbPacket) and packet.fmt == aiortc_rtp.RTCP_RTPFB_NACK
    )


def is_keyframe_request(packet: Rtcp) -> bool:
    """A PLI or a FIR."""
    return isinstance(packet, aiortc_rtp.RtcpPsfbPacket) and packet.fmt in (
        aiortc_rtp.RTCP_PSFB_PLI,
        aiortc_rtp.RTCP_PSFB_FIR,
    )


def keyframe_request_ssrc(packet: Rtcp) -> int:
    """The media SSRC a PLI names (for a FIR: the first FCI entry's SSRC)."""
    if packet.fmt == aiortc_rtp.RTCP_PSFB_FIR and len(packet.fci) >= 4:
        return int(struct.unpack_from(">I", packet.fci, 0)[0])
    return int(packet.media_ssrc)


def is_sender_report(packet: Rtcp) -> bool:
    return isinstance(packet, aiortc_rtp.RtcpSrPacket)


def is_receiver_report(packet: Rtcp) -> bool:
    return isinstance(packet, aiortc_rtp.RtcpRrPacket | aiortc_rtp.RtcpSrPacket)


def nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    """A generic NACK for ``lost`` sequence numbers, given in sending order (wrap-safe)."""
    seqs = list(dict.fromkeys(s & 0xFFFF for s in lost))
    if not seqs:
        raise ValueError("nothing to NACK")
    fci = bytearray()
    pid = seqs[0]
    blp = 0
    for seq in seqs[1:]:
        distance = (seq - pid - 1) & 0xFFFF
        if distance < 16:
            blp |= 1 << distance
        else:
            fci += struct.pack(">HH", pid, blp)
            pid, blp = seq, 0
    fci += struct.pack(">HH", pid, blp)
    payload = struct.pack(">II", sender_ssrc, media_ssrc) + bytes(fci)
    return bytes(aiortc_rtp.pack_rtcp_packet(aiortc_rtp.RTCP_RTPFB, 1, payload))


def remb_bitrate(packet: Rtcp) -> int | None:
    """The bitrate of a REMB (a receiver's bandwidth estimate), ``None`` for other packets."""
    if not (
        isinstance(packet, aiortc_rtp.RtcpPsfbPacket) and packet.fmt == aiortc_rtp.RTCP_PSFB_APP
    ):
        return None
    try:
        bitrate, _ = aiortc_rtp.unpack_remb_fci(packet.fci)
    except ValueError:
        return None
    return int(bitrate)


def nack_sequences(packet: Rtcp) -> list[int]:
    """The sequence numbers a NACK asks for (16-bit, wrap-around safe)."""
    return [s & 0xFFFF for s in packet.lost]


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return bytes(
        aiortc_rtp.RtcpPsfbPacket(
            fmt=aiortc_rtp.RTCP_PSFB_PLI, ssrc=sender_ssrc, media_ssrc=media_ssrc
        )
    )


def remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    return bytes(
        aiortc_rtp.RtcpPsfbPacket(
            fmt=aiortc_rtp.RTCP_PSFB_APP,
            ssrc=sender_ssrc,
            media_ssrc=0,
            fci=aiortc_rtp.pack_remb_fci(bitrate, ssrcs),
        )
    )


def sender_report(ssrc: int, *, ntp: int, rtp_timestamp: int, packets: int, octets: int) -> bytes:
    return bytes(
        aiortc_rtp.RtcpSrPacket(
            ssrc=ssrc,
            sender_info=aiortc_rtp.RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=rtp_timestamp & 0xFFFFFFFF,
                packet_count=packets & 0xFFFFFFFF,
                octet_count=octets & 0xFFFFFFFF,
            ),
        )
    )


def sdes(ssrcs: list[int], cname: str) -> bytes:
    value = cname.encode()
    return bytes(
        aiortc_rtp.RtcpSdesPacket(
            chunks=[aiortc_rtp.RtcpSourceInfo(ssrc=s, items=[(1, value)]) for s in ssrcs]
        )
    )


def report_block(
    *,
    ssrc: int,
    fraction_lost: int,
    packets_lost: int,
    highest_sequence: int,
    jitter: int,
    lsr: int,
    dlsr: int,
) -> Any:
    return aiortc_rtp.RtcpReceiverInfo(
        ssrc=ssrc,
        fraction_lost=fraction_lost,
        packets_lost=aiortc_rtp.clamp_packets_lost(packets_lost),
        highest_sequence=highest_sequence & 0xFFFFFFFF,
        jitter=jitter,
        lsr=lsr,
        dlsr=dlsr,
    )


def receiver_report(sender_ssrc: int, blocks: list[Any]) -> bytes:
    return bytes(aiortc_rtp.RtcpRrPacket(ssrc=sender_ssrc, reports=blocks[:31]))


def sender_report_info(packet: Rtcp) -> tuple[int, int, int]:
    """``(ssrc, ntp, rtp_timestamp)`` of a sender report."""
    info = packet.sender_info
    return int(packet.ssrc), int(info.ntp_timestamp), int(info.rtp_timestamp)
