"""RTP as the forwarding path sees it: parse a packet once, write it once per slot.

Pure functions and small classes over ``bytes`` (RFC 3550 header, RFC 8285 one-byte header
extensions, RFC 7741 VP8 payload descriptor, RFC 4588 RTX). Parsing reads only what
forwarding needs; writing rebuilds the header and its extensions for the slot (the
publisher's extension IDs are not the subscriber's: Chromium's uplink IDs differ from the
ones aiortc offers on a downlink, and passed-through extensions broke audio and REMB).
"""

import struct
import time
from typing import Final

_HEADER: Final = struct.Struct(">BBHII")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_EXT_HEADER: Final = struct.Struct(">HH")

ONE_BYTE_PROFILE: Final = 0xBEDE

#: Header extension URIs the node understands.
URI_MID: Final = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME: Final = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL: Final = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


class RtpError(ValueError):
    """Bytes that are not a usable RTP packet."""


def is_rtcp(data: bytes) -> bool:
    """RTCP packet types 192-223 share the RTP version bits (RFC 5761 demultiplexing)."""
    return len(data) > 1 and 192 <= data[1] <= 223


def seq_delta(a: int, b: int) -> int:
    """``a - b`` in 16-bit sequence space, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


class RtpPacket:
    """One received RTP packet: the plaintext bytes and where its parts are.

    ``payload_start``/``payload_end`` delimit the codec payload (padding excluded). After
    :meth:`unwrap_rtx` the packet describes the original packet (its sequence number and
    payload type), still over the RTX packet's bytes. VP8 fields are filled by
    :func:`parse_vp8`.
    """

    __slots__ = (
        "arrival",
        "audio_level",
        "data",
        "discontinuity",
        "frame_start",
        "generation",
        "keyframe",
        "marker",
        "payload_end",
        "payload_start",
        "payload_type",
        "picture_id",
        "picture_id_at",
        "picture_id_bits",
        "send_time",
        "seq",
        "ssrc",
        "timestamp",
    )

    data: bytes
    arrival: float
    audio_level: int
    marker: int
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload_start: int
    payload_end: int
    keyframe: bool
    frame_start: bool
    picture_id: int
    picture_id_at: int
    picture_id_bits: int
    discontinuity: bool
    generation: int
    #: The abs-send-time (24-bit) of its forwarding, stamped once for every slot it goes
    #: to (one clock read per packet, not per subscriber); -1 until then.
    send_time: int

    def __init__(self, data: bytes, arrival: float = 0.0) -> None:
        if len(data) < 12:
            raise RtpError("shorter than an RTP header")
        b0, b1, seq, timestamp, ssrc = _HEADER.unpack_from(data, 0)
        if b0 >> 6 != 2:
            raise RtpError("not RTP version 2")
        pos = 12 + 4 * (b0 & 0x0F)
        self.audio_level = -1
        if b0 & 0x10:
            if len(data) < pos + 4:
                raise RtpError("truncated header extension")
            _, words = _EXT_HEADER.unpack_from(data, pos)
            pos += 4 + 4 * words
        end = len(data)
        if b0 & 0x20:
            if end <= pos:
                raise RtpError("padding without payload")
            end -= data[end - 1]
        if end < pos:
            raise RtpError("truncated packet")
        self.data = data
        self.arrival = arrival
        self.marker = b1 >> 7
        self.payload_type = b1 & 0x7F
        self.seq = seq
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload_start = pos
        self.payload_end = end
        self.keyframe = False
        self.frame_start = False
        self.picture_id = -1
        self.picture_id_at = -1
        self.picture_id_bits = 0
        self.discontinuity = False
        self.generation = 0
        self.send_time = -1

    @property
    def payload_size(self) -> int:
        return self.payload_end - self.payload_start

    def extension(self, ext_id: int) -> bytes | None:
        """The value of one-byte header extension ``ext_id``, if the packet carries it."""
        start = self._extension_block()
        if start < 0:
            return None
        data = self.data
        profile, words = _EXT_HEADER.unpack_from(data, start)
        if profile != ONE_BYTE_PROFILE:
            return None
        pos = start + 4
        end = pos + 4 * words
        while pos < end:
            head = data[pos]
            if head == 0:
                pos += 1
                continue
            found, length = head >> 4, (head & 0x0F) + 1
            if found == 15:
                return None
            if found == ext_id:
                return data[pos + 1 : pos + 1 + length]
            pos += 1 + length
        return None

    def _extension_block(self) -> int:
        data = self.data
        if not data[0] & 0x10:
            return -1
        return 12 + 4 * (data[0] & 0x0F)

    def read_audio_level(self, ext_id: int) -> int:
        """The RFC 6464 level (0 = loudest, 127 = silence) or -1 when absent."""
        if ext_id <= 0:
            return -1
        value = self.extension(ext_id)
        if not value:
            return -1
        return int(value[0]) & 0x7F

    def unwrap_rtx(self, payload_type: int, ssrc: int) -> bool:
        """Turn an RFC 4588 retransmission into the original packet; False for padding."""
        if self.payload_end - self.payload_start < 2:
            return False  # a padding-only probe (Chromium's bandwidth probing)
        self.seq = _U16.unpack_from(self.data, self.payload_start)[0]
        self.payload_start += 2
        self.payload_type = payload_type
        self.ssrc = ssrc
        return True


def parse_vp8(packet: RtpPacket) -> None:
    """Fill ``frame_start``, ``keyframe`` and the picture id of a VP8 packet (RFC 7741)."""
    data = packet.data
    pos = packet.payload_start
    end = packet.payload_end
    if pos >= end:
        return
    b = data[pos]
    start_of_partition = b & 0x10
    partition = b & 0x07
    pos += 1
    if b & 0x80:
        if pos >= end:
            return
        x = data[pos]
        pos += 1
        if x & 0x80:
            if pos >= end:
                return
            if data[pos] & 0x80:
                if pos + 1 >= end:
                    return
                packet.picture_id = _U16.unpack_from(data, pos)[0] & 0x7FFF
                packet.picture_id_bits = 15
            else:
                packet.picture_id = data[pos]
                packet.picture_id_bits = 7
            packet.picture_id_at = pos
            pos += 2 if packet.picture_id_bits == 15 else 1
        if x & 0x40:
            pos += 1
        if x & 0x30:
            pos += 1
    if start_of_partition and partition == 0:
        packet.frame_start = True
        # VP8 payload header, first octet: bit 0 is the inverse key frame flag (RFC 6386).
        packet.keyframe = pos < end and not data[pos] & 0x01


def abs_send_time(now: float | None = None) -> int:
    """The 24-bit 6.18 fixed-point seconds of the abs-send-time extension."""
    return int((time.time() if now is None else now) * 262144) & 0xFFFFFF


class HeaderTemplate:
    """A slot's RTP header with its own extensions (mid, abs-send-time, audio level).

    :meth:`write` fills the per-packet fields into a reused ``bytearray`` and returns it;
    the caller joins it with the payload at once (it is overwritten by the next call).
    """

    __slots__ = ("_ast_at", "_ast_head", "_buf", "_level_at", "_pt", "_ssrc", "size")

    def __init__(
        self,
        *,
        payload_type: int,
        ssrc: int,
        mid: str = "",
        mid_id: int = 0,
        abs_send_time_id: int = 0,
        audio_level_id: int = 0,
    ) -> None:
        elements = bytearray()
        self._level_at = -1
        self._ast_at = -1
        self._ast_head = 0
        if mid_id and mid:
            value = mid.encode()
            if not 1 <= len(value) <= 16:
                raise ValueError("a mid must be 1 to 16 bytes")
            elements += bytes([(mid_id << 4) | (len(value) - 1)]) + value
        if audio_level_id:
            elements += bytes([audio_level_id << 4])
            self._level_at = 16 + len(elements)
            elements += b"\x7f"
        if abs_send_time_id:
            self._ast_at = 16 + len(elements)
            self._ast_head = (abs_send_time_id << 4) | 2
            elements += bytes([self._ast_head, 0, 0, 0])
        while len(elements) % 4:
            elements += b"\x00"
        if elements:
            block = _EXT_HEADER.pack(ONE_BYTE_PROFILE, len(elements) // 4) + bytes(elements)
            first = 0x90
        else:
            block = b""
            first = 0x80
        self._buf = bytearray(12) + bytearray(block)
        self._buf[0] = first
        self._pt = payload_type & 0x7F
        self._ssrc = ssrc
        self.size = len(self._buf)

    def write(
        self,
        seq: int,
        timestamp: int,
        marker: int,
        audio_level: int = -1,
        send_time: int = -1,
        *,
        payload_type: int = -1,
        ssrc: int = -1,
        now: float | None = None,
    ) -> bytearray:
        buf = self._buf
        pt = self._pt if payload_type < 0 else payload_type
        _HEADER.pack_into(
            buf,
            0,
            buf[0],
            (marker << 7) | pt,
            seq,
            timestamp,
            self._ssrc if ssrc < 0 else ssrc,
        )
        if self._ast_at >= 0:
            ast = send_time if send_time >= 0 else abs_send_time(now)
            _U32.pack_into(buf, self._ast_at, (self._ast_head << 24) | ast)
        if self._level_at >= 0:
            buf[self._level_at] = audio_level if audio_level >= 0 else 0x7F
        return buf


def write_picture_id(payload: bytearray, at: int, bits: int, value: int) -> None:
    """Overwrite a VP8 picture id in place (keeping its 7- or 15-bit form)."""
    if bits == 15:
        _U16.pack_into(payload, at, 0x8000 | (value & 0x7FFF))
    else:
        payload[at] = value & 0x7F
