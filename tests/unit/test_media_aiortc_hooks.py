"""The aiortc/aioice internals the packet path relies on still exist and behave.

aiortc is pinned to its minor version in pyproject.toml; an upgrade that moves one of
these makes this file fail before any call does (the node also checks at start).
"""

import asyncio

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import CODECS

from media_node import aiortc_hooks
from media_node.sdp import pinned_codecs


def test_every_internal_is_there() -> None:
    aiortc_hooks.check()


def test_opus_dtx_lands_in_the_answer() -> None:
    aiortc_hooks.enable_opus_dtx()
    opus = next(c for c in CODECS["audio"] if c.mimeType.lower() == "audio/opus")
    assert opus.parameters["usedtx"] == 1


async def test_stubbed_senders_and_receivers_get_their_parameters_and_close_cleanly() -> None:
    config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    node, client = RTCPeerConnection(config), RTCPeerConnection(config)
    sent: list[object] = []
    received: list[object] = []
    connected = asyncio.Event()
    try:
        for kind in ("video", "audio"):
            t = node.addTransceiver(kind, direction="sendonly")
            t.setCodecPreferences(pinned_codecs(kind, sending=True))
            aiortc_hooks.stub_sender(t.sender, sent.append)
            ssrc, rtx = aiortc_hooks.sender_ssrcs(t.sender)
            assert ssrc > 0 and rtx > 0
        await node.setLocalDescription(await node.createOffer())
        await client.setRemoteDescription(
            RTCSessionDescription(sdp=node.localDescription.sdp, type="offer")
        )
        for t in client.getTransceivers():
            aiortc_hooks.stub_receiver(t.receiver, received.append)
        await client.setLocalDescription(await client.createAnswer())

        @node.on("connectionstatechange")
        def changed() -> None:
            if node.connectionState == "connected":
                connected.set()

        await node.setRemoteDescription(
            RTCSessionDescription(sdp=client.localDescription.sdp, type="answer")
        )
        await asyncio.wait_for(connected.wait(), 15)
        await asyncio.wait_for(_until(lambda: len(sent) == 2 and len(received) == 2), 15)
        dtls = node.getTransceivers()[0].sender.transport
        rx, tx = aiortc_hooks.srtp_sessions(dtls)
        assert rx is not None and tx is not None
        connection = aiortc_hooks.ice_connection(dtls)
        assert aiortc_hooks.local_protocols(connection)
        pair = aiortc_hooks.nominated_pairs(connection)[1]
        assert pair.protocol.transport is not None and pair.remote_addr
    finally:
        # Never-started senders and receivers: close must not hang.
        await asyncio.wait_for(asyncio.gather(node.close(), client.close()), 10)


async def _until(predicate: object) -> None:
    assert callable(predicate)
    while not predicate():
        await asyncio.sleep(0.01)


async def test_the_connect_task_meeting_a_closed_leg_is_told_not_reported_as_a_fault() -> None:
    """aiortc's unawaited connect task raises ``InvalidStateError`` when the leg closes while
    ICE starts; the node hears of it as an ordinary end, other task failures still reach the
    loop's handler as before."""
    from aiortc.exceptions import InvalidStateError

    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    reported: list[dict[str, object]] = []
    absorbed: list[str] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        aiortc_hooks.absorb_connect_after_close(loop, absorbed.append)

        async def connect() -> None:
            raise InvalidStateError("RTCIceTransport is closed")

        async def other() -> None:
            raise InvalidStateError("something else")

        connect.__qualname__ = aiortc_hooks.CONNECT_TASK
        for coroutine in (connect(), other()):
            task = asyncio.ensure_future(coroutine)
            await asyncio.wait([task])
            loop.call_exception_handler(
                {
                    "message": "Task exception was never retrieved",
                    "exception": task.exception(),
                    "future": task,
                }
            )
        assert absorbed == ["RTCIceTransport is closed"]
        assert [str(c["exception"]) for c in reported] == ["something else"]
    finally:
        loop.set_exception_handler(before)
