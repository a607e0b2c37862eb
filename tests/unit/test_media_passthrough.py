"""The receiver hook, on a real aiortc connection pair in this process."""

import asyncio
from typing import Any

import av
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from media_node import passthrough
from media_node.keyframes import is_vp8_keyframe
from media_node.sdp import pinned_codecs
from tests.support.media_peer import PatternVideoTrack


async def connect(marked: bool) -> tuple[RTCPeerConnection, RTCPeerConnection, asyncio.Future[Any]]:
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    sender.addTrack(PatternVideoTrack((10, 200, 10)))
    transceiver = receiver.addTransceiver("video", direction="recvonly")
    transceiver.setCodecPreferences(pinned_codecs("video", sending=False))
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    tasks: list[asyncio.Future[None]] = []

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if marked:
            passthrough.enable_passthrough(track)

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


def test_passthrough_needs_install() -> None:
    passthrough.install()
    passthrough.install()  # idempotent
    assert passthrough.installed()
