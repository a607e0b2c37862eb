"""Sessions and the registry in process, under the interleavings concurrent RPCs produce.

Real aiortc peer connections on loopback, no NATS: each case checks that what a request
left behind (peer connections, forwarders, taps, speaker state) is released, and that a
refusal is a typed :class:`RpcFailure`.
"""

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack
from media_node.forwarder import ForwardingStats

from media_node import passthrough
from media_node.calls import SessionRegistry
from media_node.session import NodeContext, ParticipantSession
from media_node.tap import TapStats
from schemas.bus import RpcFailure
from schemas.media import AudioChunk
from tests.support.media_peer import SyntheticAudioTrack


async def _ignore(_: AudioChunk) -> None:
    return None


@pytest.fixture
async def registry() -> AsyncIterator[SessionRegistry]:
    passthrough.install()
    executor = ThreadPoolExecutor(1)
    node = NodeContext(
        node_id="node",
        forwarding=ForwardingStats(),
        taps=TapStats(),
        executor=executor,
        publish_chunk=_ignore,
        vad="energy",
    )
    reg = SessionRegistry(node, capacity=10)
    yield reg
    await reg.close_all()
    executor.shutdown(wait=True)


async def _client_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(SyntheticAudioTrack(True))
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _open(reg: SessionRegistry, pid: str, call: str = "call") -> ParticipantSession:
    return await reg.open(call_id=call, participant_id=pid, transcription=True, language="en")


async def _code(coro: Any) -> str:
    with pytest.raises(RpcFailure) as info:
        await coro
    return info.value.code


async def test_closing_during_publish_starts_nothing_and_answers_not_found(
    registry: SessionRegistry,
) -> None:
    session = await _open(registry, "p")
    client, offer = await _client_offer()
    try:
        publishing = asyncio.create_task(session.publish(offer))
        await asyncio.sleep(0)  # publish is now inside aiortc's SDP/ICE work
        await registry.close(session.session_id)
        assert await _code(publishing) == "not_found"
        # No forwarder task, tap task or peer connection outlives the closed session.
        assert not session.forwarders and session.tap is None
        assert session.publish_pc is None
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert not any(n.startswith(("forward:", "tap:")) for n in names), names
    finally:
        await client.close()


async def test_a_second_publish_racing_the_first_gets_conflict(
    registry: SessionRegistry,
) -> None:
    session = await _open(registry, "p")
    client, offer = await _client_offer()
    try:
        first = asyncio.create_task(session.publish(offer))
        await asyncio.sleep(0)
        assert await _code(session.publish(offer)) == "conflict"
        assert "a=fingerprint" in await first
    finally:
        await client.close()


async def test_unexpected_sections_get_bad_request_before_aiortc_sees_them(
    registry: SessionRegistry,
) -> None:
    session = await _open(registry, "p")
    client, offer = await _client_offer()
    try:
        no_dtls = "\r\n".join(x for x in offer.split("\r\n") if not x.startswith("a=fingerprint"))
        assert await _code(session.publish(no_dtls)) == "bad_request"
        same_mid = offer.replace("a=mid:1", "a=mid:0")
        assert await _code(session.publish(same_mid)) == "bad_request"
        receive_only = offer.replace("a=sendrecv", "a=recvonly")
        assert await _code(session.publish(receive_only)) == "bad_request"
        assert session.publish_pc is None
        assert "a=fingerprint" in await session.publish(offer)  # still usable
    finally:
        await client.close()


async def test_a_subscriber_answering_twice_at_once_gets_conflict(
    registry: SessionRegistry,
) -> None:
    await _open(registry, "pub")
    viewer = await _open(registry, "viewer")
    sub = await registry.subscribe(viewer, "pub")
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await client.setRemoteDescription(RTCSessionDescription(await sub.offer(), "offer"))
        await client.setLocalDescription(await client.createAnswer())
        answer = client.localDescription.sdp
        results = await asyncio.gather(
            sub.answer(answer), sub.answer(answer), return_exceptions=True
        )
        codes = sorted(r.code if isinstance(r, RpcFailure) else "ok" for r in results)
        assert codes == ["conflict", "ok"], results
    finally:
        await client.close()


async def test_a_publisher_leaving_while_an_offer_is_made_fails_the_offer_cleanly(
    registry: SessionRegistry,
) -> None:
    publisher = await _open(registry, "pub")
    viewer = await _open(registry, "viewer")
    sub = await registry.subscribe(viewer, "pub")
    offering = asyncio.create_task(sub.offer())
    await asyncio.sleep(0)
    await registry.close(publisher.session_id)
    assert await _code(offering) == "not_found"
    assert not viewer.subscriptions and publisher.forwarded_streams == 0
    # Closing while ICE was being gathered used to leak the sockets gathered after it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_reopening_replaces_the_old_session_and_frees_its_media(
    registry: SessionRegistry,
) -> None:
    old = await _open(registry, "p")
    client, offer = await _client_offer()
    try:
        await old.publish(offer)
        both = await asyncio.gather(_open(registry, "p"), _open(registry, "p"))
        assert old.closed and old.publish_pc is None
        assert registry.participants == 1
        assert registry.sessions == {both[1].session_id: both[1]}
        assert both[0].closed  # the later reopen replaced the earlier one too
    finally:
        await client.close()


async def test_close_all_finishes_every_session_even_if_one_fails(
    registry: SessionRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = await _open(registry, "a")
    fine = await _open(registry, "b")

    async def explode() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(broken.keyframes, "close", lambda: None)
    monkeypatch.setattr(broken, "_drop_publish_pc", explode)
    await registry.close_all()
    assert broken.closed and fine.closed
    await asyncio.wait_for(registry.wait_idle(), 1)


async def test_a_left_participant_is_not_revived_by_late_audio_levels(
    registry: SessionRegistry,
) -> None:
    leaver = await _open(registry, "leaver")
    await _open(registry, "stayer")
    room = registry.rooms["call"]
    await registry.close(leaver.session_id)
    leaver._level_from_tap(-10.0)  # a last tap batch finishing after close
    assert room.speaker.level("leaver") == -127.0
    assert room.speaker.evaluate() is None
