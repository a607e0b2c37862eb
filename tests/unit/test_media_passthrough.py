"""The receiver hook, on a real aiortc connection pair in this process."""

import asyncio
import threading
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from media_node import passthrough
from media_node.keyframes import is_vp8_keyframe
from media_node.sdp import pinned_codecs
from tests.support.media_peer import PatternVideoTrack


async def connect(
    marked: bool, *, inline: bool = False
) -> tuple[RTCPeerConnection, RTCPeerConnection, asyncio.Future[Any]]:
    sender, receiver = (
        RTCPeerConnection(RTCConfiguration(iceServers=[])),
        RTCPeerConnection(RTCConfiguration(iceServers=[])),
    )
    sender.addTrack(PatternVideoTrack((10, 200, 10)))
    transceiver = receiver.addTransceiver("video", direction="recvonly")
    transceiver.setCodecPreferences(pinned_codecs("video", sending=False))
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    tasks: list[asyncio.Future[None]] = []

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if marked:
            passthrough.enable_passthrough(track, transceiver.receiver if inline else None)

        async def first() -> None:
            got.set_result(await track.recv())

        tasks.append(asyncio.ensure_future(first()))

    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    return sender, receiver, got


async def test_marked_tracks_deliver_encoded_vp8_and_others_still_decode() -> None:
    passthrough.install()
    assert passthrough.installed()
    sender, receiver, got = await connect(marked=True)
    try:
        first = await asyncio.wait_for(got, 20)
        assert isinstance(first, av.Packet)
        assert is_vp8_keyframe(bytes(first)) and first.time_base.denominator == 90000
    finally:
        await sender.close()
        await receiver.close()

    sender, receiver, got = await connect(marked=False)
    try:
        assert isinstance(await asyncio.wait_for(got, 20), av.VideoFrame)
    finally:
        await sender.close()
        await receiver.close()


async def test_with_its_receiver_frames_are_wrapped_on_the_loop_without_a_thread() -> None:
    passthrough.install()
    sender, receiver, got = await connect(marked=True, inline=True)
    try:
        rtp_receiver = receiver.getTransceivers()[0].receiver
        assert isinstance(
            rtp_receiver._RTCRtpReceiver__decoder_queue,  # type: ignore[attr-defined]
            passthrough.InlineFrameQueue,
        )
        first = await asyncio.wait_for(got, 20)
        assert isinstance(first, av.Packet)
        assert is_vp8_keyframe(bytes(first)) and first.time_base.denominator == 90000
        assert not any(t.name == "video-decoder" and t.is_alive() for t in threading.enumerate())
    finally:
        await sender.close()
        await receiver.close()


def test_passthrough_needs_install() -> None:
    passthrough.install()
    passthrough.install()  # idempotent
    assert passthrough.installed()
