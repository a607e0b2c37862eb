"""``set_transcription`` on a real media node: a session's tap turns on and off and changes
language mid-call, with no new session, no new peer connection, no gap in its media."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.errors import RpcFailed
from schemas.media import AudioChunk, MediaAck, SetTranscription
from schemas.media_events import AnyMediaEvent, LegStateChanged, SessionClosed
from tests.support.media_peer import NodeProcess
from tests.support.nats_server import NatsServer
from tests.support.sfu_client import NatsSfuTransport, SfuClient
from tests.support.waiting import Collector

pytestmark = pytest.mark.slow


@pytest.fixture
async def node(bus: Bus, nats_server: NatsServer, uid: str) -> AsyncIterator[NodeProcess]:
    proc = await NodeProcess.start(bus, nats_server.url, f"media-{uid}")
    yield proc
    code = await proc.stop()
    assert code == 0, proc.log_text()
    assert not proc.tracebacks, proc.log_text()


def finals_of(chunks: list[AudioChunk], who: str, language: str | None = None) -> list[AudioChunk]:
    return [
        c
        for c in chunks
        if c.participant_id == who and c.is_final and language in (None, c.language)
    ]


async def test_a_sessions_tap_turns_on_off_and_changes_language_without_a_reopen(
    bus: Bus, node: NodeProcess, uid: str
) -> None:
    call_id = f"call-{uid}"
    transport = NatsSfuTransport(bus, node.node_id)
    chunks: Collector[AudioChunk] = Collector()
    events: Collector[AnyMediaEvent] = Collector()
    await bus.subscribe(subjects.audio_chunks_of(call_id), AudioChunk, chunks)
    await bus.subscribe(subjects.media_events_of(call_id), AnyMediaEvent, events)
    await bus.flush()
    # The talker speaks in bursts (1.2 s on, 0.8 s off) on a call session opened without
    # transcription; the marker's captions session is tapped all along, as a clock.
    talker = SfuClient(transport, call_id, "talker", speaking=True, steady_speech=False)
    marker = SfuClient(
        transport,
        call_id,
        "marker",
        purpose="captions",
        transcription=True,
        speaking=True,
        steady_speech=False,
    )

    async def set_tap(enabled: bool, language: str) -> None:
        ack = await talker.request(
            SetTranscription(session_id=talker.session_id, enabled=enabled, language=language),
            MediaAck,
        )
        assert ack.session_id == talker.session_id

    async def marker_finals(more: int) -> None:
        before = len(finals_of(chunks.items, "marker"))
        await chunks.wait(lambda cs: len(finals_of(cs, "marker")) >= before + more, 30)

    try:
        await talker.join()
        await marker.join()
        await marker_finals(2)
        assert not finals_of(chunks.items, "talker")  # not tapped yet
        uplink = talker.uplink

        await set_tap(True, "fr")
        await chunks.wait(lambda cs: bool(finals_of(cs, "talker", "fr")), 30)
        await set_tap(True, "de")  # a new language, tap on: the next chunks carry it
        await chunks.wait(lambda cs: bool(finals_of(cs, "talker", "de")), 30)

        await set_tap(False, "de")
        off_at = len(chunks.items)
        await marker_finals(2)  # the marker spoke on; the talker, untapped, sent nothing
        assert not [c for c in chunks.items[off_at:] if c.participant_id == "talker"]

        await set_tap(True, "es")
        await chunks.wait(lambda cs: bool(finals_of(cs, "talker", "es")), 30)
        order = [c.language for c in chunks.items if c.participant_id == "talker"]
        assert order == sorted(order, key=["fr", "de", "es"].index)  # never back

        # The same session and peer connection all along: nothing closed or re-published.
        assert talker.uplink is uplink
        assert not [e for e in events.items if isinstance(e, SessionClosed)]
        uplink_states = [
            e.state
            for e in events.items
            if isinstance(e, LegStateChanged)
            and e.session_id == talker.session_id
            and e.leg == "uplink"
        ]
        assert uplink_states == ["connected"]

        with pytest.raises(RpcFailed) as refused:
            await talker.request(
                SetTranscription(session_id="no-such-session", enabled=True), MediaAck
            )
        assert refused.value.code == "not_found"
    finally:
        await asyncio.gather(talker.leave(), marker.leave())
