"""The packet path's RTP parsing and writing, on hand-made packets."""

import struct

import pytest
from aiortc import rtp as aiortc_rtp

from media_node import rtcp
from media_node.rtp import HeaderTemplate, RtpError, RtpPacket, parse_vp8, seq_delta


def vp8_packet(
    *,
    seq: int = 10,
    ts: int = 9000,
    picture_id: int = 300,
    start: bool = True,
    keyframe: bool = True,
    marker: bool = True,
    level_ext: tuple[int, int] | None = None,
    payload: bytes = b"\x00" * 40,
) -> bytes:
    ext = b""
    first = 0x80
    if level_ext is not None:
        ext_id, level = level_ext
        first |= 0x10
        ext = struct.pack(">HH", 0xBEDE, 1) + bytes([ext_id << 4, level, 0, 0])
    header = struct.pack(">BBHII", first, (0x80 if marker else 0) | 96, seq, ts, 0xABCD) + ext
    descriptor = bytes([0x90 if start else 0x80, 0x80]) + struct.pack(">H", 0x8000 | picture_id)
    vp8 = bytes([0x00 if keyframe else 0x01]) + payload
    return header + descriptor + vp8


def test_header_fields_and_vp8_descriptor_are_read() -> None:
    packet = RtpPacket(vp8_packet(seq=65535, picture_id=0x7ABC), arrival=1.5)
    parse_vp8(packet)
    assert (packet.seq, packet.timestamp, packet.ssrc, packet.marker) == (65535, 9000, 0xABCD, 1)
    assert packet.payload_type == 96 and packet.arrival == 1.5
    assert packet.frame_start and packet.keyframe
    assert packet.picture_id == 0x7ABC and packet.picture_id_bits == 15
    delta = RtpPacket(vp8_packet(keyframe=False))
    parse_vp8(delta)
    assert delta.frame_start and not delta.keyframe
    middle = RtpPacket(vp8_packet(start=False, keyframe=True))
    parse_vp8(middle)
    assert not middle.frame_start and not middle.keyframe


def test_audio_level_extension_is_read_by_its_negotiated_id() -> None:
    packet = RtpPacket(vp8_packet(level_ext=(2, 0x80 | 33)))
    assert packet.read_audio_level(2) == 33
    assert packet.read_audio_level(1) == -1
    assert RtpPacket(vp8_packet()).read_audio_level(2) == -1


def test_garbage_is_refused() -> None:
    with pytest.raises(RtpError):
        RtpPacket(b"\x80\x60\x00")
    with pytest.raises(RtpError):
        RtpPacket(b"\x40" + b"\x00" * 20)  # version 1


def test_rtx_unwrap_restores_the_original_sequence_and_drops_probes() -> None:
    original = vp8_packet(seq=500)
    header, body = original[:12], original[12:]
    rtx = bytearray(header + struct.pack(">H", 500) + body)
    struct.pack_into(">BHI", rtx, 1, 97, 7, 0)  # RTX payload type, RTX seq 7
    packet = RtpPacket(bytes(rtx))
    assert packet.unwrap_rtx(96, 0xABCD)
    parse_vp8(packet)
    assert (packet.seq, packet.payload_type, packet.ssrc) == (500, 96, 0xABCD)
    assert packet.keyframe
    probe = RtpPacket(struct.pack(">BBHII", 0x80, 97, 8, 0, 1))
    assert not probe.unwrap_rtx(96, 0xABCD)


def test_the_template_rebuilds_the_slots_own_extensions() -> None:
    template = HeaderTemplate(
        payload_type=100, ssrc=42, mid="7", mid_id=1, abs_send_time_id=3, audio_level_id=2
    )
    out = bytes(template.write(1234, 99, 1, audio_level=20)) + b"payload"
    parsed = aiortc_rtp.RtpPacket.parse(out, _extensions_map())
    assert (parsed.payload_type, parsed.sequence_number, parsed.timestamp) == (100, 1234, 99)
    assert parsed.ssrc == 42 and parsed.marker == 1
    assert parsed.extensions.mid == "7"
    assert parsed.extensions.audio_level == (False, 20)
    assert parsed.extensions.abs_send_time is not None
    assert parsed.payload == b"payload"
    # A send time stamped once per forwarded packet is written as given.
    stamped = bytes(template.write(1235, 99, 0, 20, 0x123456)) + b"payload"
    assert aiortc_rtp.RtpPacket.parse(stamped, _extensions_map()).extensions.abs_send_time == (
        0x123456
    )


def _extensions_map() -> aiortc_rtp.HeaderExtensionsMap:
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

    params = RTCRtpParameters(
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
            RTCRtpHeaderExtensionParameters(
                id=2, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
            ),
            RTCRtpHeaderExtensionParameters(
                id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
            ),
        ]
    )
    extensions = aiortc_rtp.HeaderExtensionsMap()
    extensions.configure(params)
    return extensions


def test_sequence_arithmetic_wraps() -> None:
    assert seq_delta(2, 65534) == 4
    assert seq_delta(65534, 2) == -4
    assert seq_delta(100, 100) == 0


def test_nack_round_trips_across_the_wrap() -> None:
    lost = [65533, 65535, 0, 3, 40]
    data = rtcp.nack(1, 2, lost)
    (packet,) = rtcp.parse(data)
    assert rtcp.is_nack(packet)
    assert sorted(rtcp.nack_sequences(packet)) == sorted(lost)


def test_sender_report_and_pli_parse_back() -> None:
    ntp = rtcp.ntp_from_unix(1_700_000_000.25)
    sr, _sdes = rtcp.parse(
        rtcp.sender_report(5, ntp=ntp, rtp_timestamp=123, packets=10, octets=1000)
        + rtcp.sdes([5], "cname")
    )
    assert rtcp.sender_report_info(sr) == (5, ntp, 123)
    assert abs(rtcp.unix_from_ntp(ntp) - 1_700_000_000.25) < 1e-6
    (pli,) = rtcp.parse(rtcp.pli(1, 77))
    assert rtcp.is_keyframe_request(pli) and rtcp.keyframe_request_ssrc(pli) == 77


def test_remb_bitrate_reads_a_subscribers_estimate_and_nothing_else() -> None:
    (remb,) = rtcp.parse(rtcp.remb(7, 1_234_000, [11, 12]))
    # REMB's mantissa/exponent form rounds: within one part in 2**18.
    assert abs((rtcp.remb_bitrate(remb) or 0) - 1_234_000) <= 1_234_000 >> 17
    (pli,) = rtcp.parse(rtcp.pli(7, 11))
    assert rtcp.remb_bitrate(pli) is None
    (nack,) = rtcp.parse(rtcp.nack(7, 11, [3]))
    assert rtcp.remb_bitrate(nack) is None
