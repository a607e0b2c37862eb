"""Sessions and the registry in process, under the interleavings concurrent RPCs produce.

Real aiortc peer connections on loopback, no NATS: each case checks that what a request
left behind (peer connections, legs, feeds, speaker state) is released, and that a refusal
is a typed :class:`RpcFailure`.
"""

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

from media_node.calls import SessionRegistry
from media_node.downlink import DownlinkConfig
from media_node.inbound import InboundStats
from media_node.session import NodeContext
from media_node.slot import ForwardingStats
from media_node.tap import TapStats
from media_node.transport import TransportStats
from media_node.uplink import UplinkConfig
from schemas.bus import RpcFailure
from schemas.media import AudioChunk, OpenSession
from schemas.media_events import MediaEvent, SessionClosed
from tests.support.media_peer import SyntheticAudioTrack


async def _ignore(_: AudioChunk) -> None:
    return None


@pytest.fixture
async def registry() -> AsyncIterator[SessionRegistry]:
    executor = ThreadPoolExecutor(1)
    transports = TransportStats()
    events: list[MediaEvent] = []
    node = NodeContext(
        node_id="node",
        uplinks=UplinkConfig(
            inbound=InboundStats(),
            transports=transports,
            max_hole_s=0.5,
            nack_retry_s=0.1,
            video_bitrate_bps=1_000_000,
            rtcp_interval_s=1.0,
            negotiation_timeout_s=10,
            connect_timeout_s=20,
        ),
        downlinks=DownlinkConfig(
            forwarding=ForwardingStats(),
            transports=transports,
            rtcp_interval_s=1.0,
            negotiation_timeout_s=10,
            connect_timeout_s=20,
            history_packets=64,
        ),
        taps=TapStats(),
        executor=executor,
        publish_chunk=_ignore,
        emit=events.append,
    )
    reg = SessionRegistry(node, capacity=3, video_slots=2, audio_slots=1)
    yield reg
    await reg.close_all("node_draining")
    assert not node.legs, node.legs
    executor.shutdown()


async def offer(audio: bool = True) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    if audio:
        pc.addTrack(SyntheticAudioTrack(False))
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def open_req(participant: str, **kw: object) -> OpenSession:
    return OpenSession(call_id="c", participant_id=participant, **kw)  # type: ignore[arg-type]


async def test_closing_during_publish_starts_nothing_and_answers_not_found(
    registry: SessionRegistry,
) -> None:
    session, _ = registry.open(open_req("p1"))
    client, sdp = await offer()
    try:
        publishing = asyncio.ensure_future(session.publish(sdp))
        await asyncio.sleep(0)  # the publish is now inside aiortc
        await registry.close(session, "left")
        with pytest.raises(RpcFailure) as refused:
            await publishing
        assert refused.value.code == "not_found"
        assert session.uplink is None and not registry.node.legs
    finally:
        await client.close()


async def test_a_second_publish_replaces_the_uplink(registry: SessionRegistry) -> None:
    session, _ = registry.open(open_req("p1"))
    first, sdp1 = await offer()
    second, sdp2 = await offer()
    try:
        await session.publish(sdp1)
        old = session.uplink
        await session.publish(sdp2)
        assert session.uplink is not old and old is not None
        await asyncio.wait_for(_until(lambda: old.closed and old.state == "closed"), 10)
    finally:
        await first.close()
        await second.close()


async def test_unexpected_sections_and_verbs_get_bad_request(registry: SessionRegistry) -> None:
    captions, _ = registry.open(open_req("p1", purpose="captions"))
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("video", direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    try:
        with pytest.raises(RpcFailure) as refused:
            await captions.publish(client.localDescription.sdp)
        assert refused.value.code == "bad_request"  # a captions session sends audio only
        with pytest.raises(RpcFailure) as refused:
            await captions.open_downlink()
        assert refused.value.code == "bad_request"
        no_dtls = "\r\n".join(
            x for x in client.localDescription.sdp.split("\r\n") if not x.startswith("a=fingerpr")
        )
        call, _ = registry.open(open_req("p2"))
        with pytest.raises(RpcFailure) as refused:
            await call.publish(no_dtls)
        assert refused.value.code == "bad_request"
        assert not registry.node.legs
    finally:
        await client.close()


async def test_reopening_replaces_the_old_session_and_capacity_is_enforced(
    registry: SessionRegistry,
) -> None:
    first, replaced = registry.open(open_req("p1"))
    assert replaced is None
    again, replaced = registry.open(open_req("p1"))
    assert replaced is first and registry.participants == 1
    await registry.teardown(first, "replaced")
    assert first.closed and first.close_reason == "replaced"
    registry.open(open_req("p2"))
    registry.open(open_req("p3"))
    with pytest.raises(RpcFailure) as full:
        registry.open(open_req("p4"))
    assert full.value.code == "unavailable"
    assert again.session_id in registry.sessions


async def test_downlink_offer_lists_every_slot_and_a_stale_answer_conflicts(
    registry: SessionRegistry,
) -> None:
    session, _ = registry.open(open_req("p1"))
    offered = await session.open_downlink()
    assert [s.kind for s in offered.slots] == ["video", "video", "audio"]
    assert len({s.ssrc for s in offered.slots}) == 3 and all(s.mid for s in offered.slots)
    with pytest.raises(RpcFailure) as refused:
        await session.answer_downlink("v=0\r\n")
    assert refused.value.code == "bad_request"
    await registry.close(session, "left")
    events = registry.node.emit.__self__  # type: ignore[attr-defined]
    assert any(isinstance(e, SessionClosed) and e.reason == "left" for e in events)


async def _until(predicate: object) -> None:
    assert callable(predicate)
    while not predicate():
        await asyncio.sleep(0.01)
