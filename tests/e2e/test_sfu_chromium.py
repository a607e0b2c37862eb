"""Chromium against a real media node, independent of the web client.

Debian's Chromium (fake camera, the espeak-ng sentence as microphone, or digital silence)
publishes and subscribes through ``tests/e2e/sfu_page/index.html``, a page that only runs
WebRTC and reports ``getStats``; this test relays every SDP between the page and the node's
NATS RPC (``page.evaluate``), as a gateway would. It checks what aiortc peers cannot show
(aiortc to aiortc hides header-extension ID mismatches, DTX, Chromium's PLI handling):

- the Chromium subscriber decodes frames in its video slot and audio in its audio slot;
- a slot switch between two Chromium publishers (a pin moved) shows the new one, starting
  on a keyframe, with no renegotiation;
- the node's rebuilt header extensions work: the audio level arrives in the slot
  (``getSynchronizationSources``) and the subscriber's bandwidth estimate, computed from
  the slot's abs-send-time, is reported back (REMB) at a usable rate;
- Opus DTX: the node's answer asks for it, and a silent Chromium microphone sends a
  fraction of a speaking one's packets.

Every wait is on a condition with a deadline (``getStats`` polled); no wall-clock bound is
asserted (``bench/sfu_scale.py`` measures times).
"""

import asyncio
import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.errors import RpcFailed
from schemas.ids import new_id
from schemas.media import (
    AnswerDownlink,
    CloseSession,
    DownlinkOffer,
    MediaAck,
    MediaNodeHeartbeat,
    MediaRequest,
    OpenDownlink,
    OpenSession,
    Publish,
    SdpAnswer,
    SessionOpened,
    SetPreferences,
)
from schemas.media_events import AnyMediaEvent, SlotsChanged
from schemas.settings import BusSettings
from tests.support.media_peer import NodeProcess
from tests.support.nats_server import NatsServer

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")
PAGE_DIR = Path(__file__).resolve().parent / "sfu_page"
#: What a browser on two busy cores may take to connect, switch or ramp up.
WAIT_S = 30.0


class NodeHarness:
    """A media node process and a bus, on an event loop of their own (Playwright's sync
    API must not run inside an asyncio loop, so the test stays synchronous)."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.bus: Bus | None = None
        self.node: NodeProcess | None = None
        self.events: list[AnyMediaEvent] = []
        self.beats: list[MediaNodeHeartbeat] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def node_id(self) -> str:
        assert self.node is not None
        return self.node.node_id

    def start(self, call_id: str) -> None:
        async def start() -> None:
            settings = BusSettings(nats_url=self.nats_url, nats_connect_deadline_s=5)
            self.bus = bus = await Bus.connect(settings, f"e2e-sfu-{new_id()[:8]}")

            async def on_event(event: AnyMediaEvent, _: Incoming) -> None:
                self.events.append(event)

            async def on_beat(beat: MediaNodeHeartbeat, _: Incoming) -> None:
                if self.node is not None and beat.node_id == self.node.node_id:
                    self.beats.append(beat)

            await bus.subscribe(subjects.media_events_of(call_id), AnyMediaEvent, on_event)
            await bus.subscribe(subjects.MEDIA_NODE_HEARTBEAT, MediaNodeHeartbeat, on_beat)
            self.node = await NodeProcess.start(
                bus, self.nats_url, f"media-e2e-{new_id()[:8]}", env={"MEDIA_NODE_VAD": "energy"}
            )

        self.run(start(), timeout=60)

    def request(self, request: MediaRequest, reply_type: type[T]) -> T:
        async def ask() -> T:
            assert self.bus is not None
            subject = subjects.media_rpc(self.node_id, request.verb)
            reply: T = await self.bus.request(subject, request, reply_type, timeout=WAIT_S)
            return reply

        return self.run(ask())

    def stop(self) -> tuple[int, list[str], str]:
        async def stop() -> tuple[int, list[str], str]:
            code, tracebacks, text = 0, [], ""
            if self.node is not None:
                code = await self.node.stop()
                tracebacks, text = self.node.tracebacks, self.node.log_text()
            if self.bus is not None:
                await self.bus.close()
            return code, tracebacks, text

        try:
            return self.run(stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


class ChromiumPeer:
    """One person's page: a media session on the node, an uplink, maybe a downlink."""

    def __init__(self, harness: NodeHarness, page: Page, call_id: str, pid: str) -> None:
        self.harness = harness
        self.page = page
        self.call_id = call_id
        self.participant_id = pid
        self.session_id = ""
        self.answer_sdp = ""
        self.mids: dict[str, int] = {}

    def open(self, *, video_slots: int = 0, audio_slots: int = 0) -> None:
        opened = self.harness.request(
            OpenSession(
                call_id=self.call_id,
                participant_id=self.participant_id,
                video_slots=video_slots,
                audio_slots=audio_slots,
                lease_s=600.0,  # the test renews nothing
            ),
            SessionOpened,
        )
        self.session_id = opened.session_id

    def publish(self, *, width: int = 0, height: int = 0, fps: int = 15, audio: str) -> None:
        offer = self.page.evaluate(
            "o => window.sfu.publish(o)",
            {"width": width, "height": height, "fps": fps, "audio": audio},
        )
        answer = self.harness.request(Publish(session_id=self.session_id, sdp=offer), SdpAnswer)
        self.answer_sdp = answer.sdp
        self.page.evaluate("sdp => window.sfu.publishAnswer(sdp)", answer.sdp)

    def subscribe(self) -> None:
        offer = self.harness.request(OpenDownlink(session_id=self.session_id), DownlinkOffer)
        self.mids = {s.mid: s.index for s in offer.slots}
        answer = self.page.evaluate("sdp => window.sfu.subscribe(sdp)", offer.sdp)
        self.harness.request(AnswerDownlink(session_id=self.session_id, sdp=answer), MediaAck)

    def pin(self, pid: str) -> None:
        self.harness.request(
            SetPreferences(session_id=self.session_id, pinned=[pid], video_tiles=1), MediaAck
        )

    def slots(self) -> dict[int, dict[str, Any]]:
        """Per slot index: the page's figures for that m-line."""
        found = self.page.evaluate("() => window.sfu.slots()")
        return {self.mids[s["mid"]]: s for s in found if s["mid"] in self.mids}

    def sent(self) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate("() => window.sfu.sent()")
        return result

    def showing(self) -> dict[int, str | None]:
        """The slot map of the node's last ``SlotsChanged`` for this session."""
        maps = [
            e
            for e in self.harness.events
            if isinstance(e, SlotsChanged) and e.session_id == self.session_id
        ]
        if not maps:
            return {}
        last = max(maps, key=lambda e: e.version)
        return {s.index: s.showing_id for s in last.slots}

    def close(self) -> None:
        if self.session_id:
            with contextlib.suppress(RpcFailed):  # it may have closed itself (a failed leg)
                self.harness.request(CloseSession(session_id=self.session_id), MediaAck)
        self.page.evaluate("() => window.sfu.close()")


def wait_until(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Poll ``check`` (getStats, the event list) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    """The test page over http://127.0.0.1 (getUserMedia needs a secure context)."""
    handler = functools.partial(_QuietHandler, directory=str(PAGE_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def harness(nats_server: NatsServer, uid: str) -> Iterator[tuple[NodeHarness, str]]:
    call_id = f"call-{uid}"
    node = NodeHarness(nats_server.url)
    node.start(call_id)
    yield node, call_id
    code, tracebacks, log_text = node.stop()
    assert code == 0, log_text
    assert not tracebacks, log_text


@pytest.fixture
def pages(browser: Browser, page_origin: str) -> Iterator[Callable[[], Page]]:
    contexts: list[BrowserContext] = []

    def open_page() -> Page:
        context = browser.new_context(base_url=page_origin, permissions=["camera", "microphone"])
        contexts.append(context)
        page = context.new_page()
        page.goto("/index.html")
        return page

    yield open_page
    for context in contexts:
        context.close()


def rate(before: dict[str, Any], after: dict[str, Any], key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def test_chromium_publishes_and_subscribes_through_slots(
    harness: tuple[NodeHarness, str], pages: Callable[[], Page]
) -> None:
    node, call_id = harness
    # Alice speaks (the espeak sentence) with a 4:3 camera, Bob is silent with a 16:9 one:
    # the subscriber tells them apart by the decoded picture's shape.
    alice = ChromiumPeer(node, pages(), call_id, "alice")
    bob = ChromiumPeer(node, pages(), call_id, "bob")
    carol = ChromiumPeer(node, pages(), call_id, "carol")
    peers = [alice, bob, carol]
    try:
        alice.open()
        alice.publish(width=320, height=240, audio="mic")
        bob.open()
        bob.publish(width=320, height=180, audio="silent")
        assert "usedtx=1" in alice.answer_sdp, "the node's answer must ask for Opus DTX"
        carol.open(video_slots=1, audio_slots=2)
        carol.pin("alice")
        carol.subscribe()
        wait_until(
            "both uplinks and the downlink connected",
            lambda: all(
                p.page.evaluate("() => window.sfu.state()")[leg] == "connected"
                for p, leg in ((alice, "uplink"), (bob, "uplink"), (carol, "downlink"))
            ),
        )

        # Video: Carol's one video slot decodes Alice (4:3), frames still rising.
        def decodes(shape: float) -> dict[str, Any] | None:
            slot = carol.slots().get(0, {})
            if slot.get("framesDecoded", 0) < 10 or not slot.get("frameHeight"):
                return None
            ratio = slot["frameWidth"] / slot["frameHeight"]
            return slot if abs(ratio - shape) < 0.05 else None

        first = wait_until("Alice's video decoded in the video slot", lambda: decodes(4 / 3))
        assert carol.showing().get(0) == "alice"
        assert first["keyFramesDecoded"] >= 1
        wait_until(
            "frames still rising",
            lambda: (decodes(4 / 3) or {}).get("framesDecoded", 0) > first["framesDecoded"] + 10,
        )

        # Audio: both audio slots filled (free slots take whoever publishes audio); Alice's
        # carries decoded sound and the audio level the node copied into its extension.
        audio_slots = [1, 2]
        wait_until(
            "Alice and Bob in the audio slots",
            lambda: {carol.showing().get(i) for i in audio_slots} == {"alice", "bob"},
        )
        slot_of = {carol.showing()[i]: i for i in audio_slots}

        def alice_heard() -> bool:
            slot = carol.slots().get(slot_of["alice"], {})
            level = slot.get("extensionAudioLevel")
            return slot.get("peakRms", 0) > 0.01 and level is not None and level > 0

        wait_until("Alice's voice and audio level (extension) in her slot", alice_heard)

        # DTX: over the same stretch, silent Bob's slot gets a fraction of Alice's packets.
        before = carol.slots()
        wait_until(
            "a few seconds of audio",
            lambda: (
                rate(before[slot_of["alice"]], carol.slots()[slot_of["alice"]], "packetsReceived")
                >= 150
            ),
        )
        after = carol.slots()
        alice_packets = rate(before[slot_of["alice"]], after[slot_of["alice"]], "packetsReceived")
        bob_packets = rate(before[slot_of["bob"]], after[slot_of["bob"]], "packetsReceived")
        assert bob_packets < alice_packets / 3, (alice_packets, bob_packets)

        # abs-send-time: Chromium estimates Carol's downlink from the slots' send times and
        # tells the node (REMB). With working send times the estimate climbs above what the
        # slot carries (Chromium allows 1.5x); with broken ones (random, constant, a
        # passed-through ID) it stays at or below it (measured: 1.0x, and 0.3x at 1.5 Mbps).
        window: list[tuple[float, int]] = []

        def estimate_above_rate() -> tuple[int, int] | None:
            now = time.monotonic()
            window.append((now, int(carol.slots()[0].get("bytesReceived", 0))))
            while now - window[0][0] > 3.0:
                window.pop(0)
            if now - window[0][0] < 1.5 or not node.beats:
                return None
            bps = int((window[-1][1] - window[0][1]) * 8 / (now - window[0][0]))
            estimate = node.beats[-1].downlink_estimate_bps_min
            return (estimate, bps) if estimate >= 1.25 * bps > 0 else None

        wait_until("Chromium's REMB above the slot's bitrate", estimate_above_rate)

        # The switch: pin Bob; the same slot (same SSRC, no renegotiation) shows him.
        keyframes = carol.slots()[0]["keyFramesDecoded"]
        carol.pin("bob")
        wait_until("the slot map says Bob", lambda: carol.showing().get(0) == "bob")
        switched = wait_until("Bob's video decoded in the same slot", lambda: decodes(16 / 9))
        assert switched["keyFramesDecoded"] > keyframes, "a switch starts on a keyframe"
        wait_until(
            "Bob's frames still rising",
            lambda: (
                (decodes(16 / 9) or {}).get("framesDecoded", 0) > switched["framesDecoded"] + 10
            ),
        )
        assert carol.slots()[0]["ssrc"] == first["ssrc"]
        assert alice.sent()["video"]["framesEncoded"] > 0
    finally:
        for peer in peers:
            if peer.session_id:
                peer.close()
