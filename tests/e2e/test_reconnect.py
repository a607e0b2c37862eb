"""A network drop mid-call: Alice's connection to the gateway is cut (a TCP proxy between her
browser and the gateway drops every connection and refuses new ones), then restored.

What a person expects: Alice stays on the call screen (no pre-join, no reload, no second
camera prompt), sees that she is reconnecting; Bob sees Alice's tile as reconnecting; when
the network is back Alice resumes her place (same participant, still muted) and both videos
keep playing.
"""

import json
import re
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import WebSocket, expect

from tests.e2e.conftest import E2E_ENV, PeopleFactory, put_conversation
from tests.support.gateways import GatewayCluster
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(240)

#: A Socket.IO acknowledgement frame: "43<ack id>[<payload>]".
_ACK = re.compile(r"^43\d+(\[.*\])$", re.S)


def heartbeat_acks(into: list[float]) -> Callable[[WebSocket], None]:
    """Record the server time (``at``) of every heartbeat the gateway acknowledged."""

    def on_frame(payload: str | bytes) -> None:
        match = _ACK.match(payload) if isinstance(payload, str) else None
        if match is None:
            return
        body = json.loads(match.group(1))
        if body and isinstance(body[0], dict) and body[0].get("ok") and "intervalS" in body[0]:
            into.append(float(body[0]["at"]))

    return lambda ws: ws.on("framereceived", on_frame)


@pytest.fixture
def proxy(gateway: GatewayCluster) -> Iterator[TcpProxy]:
    p = TcpProxy(gateway.gateways[0].port).start()
    yield p
    p.stop()


def test_back_in_the_call_after_a_network_drop(
    people: PeopleFactory, gateway: GatewayCluster, proxy: TcpProxy, uid: str
) -> None:
    conversation = f"direct-{uid}"
    title = f"Drop {uid[:4]}"
    put_conversation(gateway, conversation, "DIRECT", {"alice": "member", "bob": "member"}, title)
    alice = people("alice", base_url=proxy.url)
    bob = people("bob")
    heartbeats: list[float] = []
    alice.page.on("websocket", heartbeat_acks(heartbeats))
    alice.sign_in("alice")
    bob.sign_in("bob")
    alice.start_call(title)
    bob.accept_incoming()
    alice.expect_video_playing("Bob", rising_by=3)
    bob.expect_video_playing("Alice", rising_by=3)
    alice.button("Mute microphone").click()
    expect(bob.tile("Alice")).to_have_attribute("data-audio", "off")
    participant_before = bob.tile("Alice").get_attribute("data-participant-id")
    before = alice.marker()

    proxy.cut()
    expect(alice.page.locator(".reconnecting-banner")).to_be_visible(timeout=20_000)
    expect(bob.tile("Alice")).to_have_attribute("data-connection", "reconnecting", timeout=20_000)
    expect(bob.tile("Alice").locator(".tile-overlay")).to_have_text("Reconnecting…")
    alice.screenshot("reconnect-dropped")
    bob.screenshot("reconnect-dropped")

    # Keep the network down until the browser has tried to come back at least once.
    assert proxy.retried.wait(20), "the browser never tried to reconnect"
    proxy.restore()
    expect(alice.page.locator(".reconnecting-banner")).to_be_hidden(timeout=30_000)
    resumed_at = time.time()
    expect(bob.tile("Alice")).to_have_attribute("data-connection", "connected", timeout=20_000)
    expect(alice.page.locator("#banner")).to_contain_text("Reconnected")

    # The same place in the same call, still muted, with the same devices and page.
    assert bob.tile("Alice").get_attribute("data-participant-id") == participant_before
    expect(bob.tile("Alice")).to_have_attribute("data-audio", "off")
    expect(alice.button("Mute microphone")).to_have_attribute("aria-pressed", "true")
    after = alice.marker()
    assert after["loadedAt"] == before["loadedAt"], "the page was reloaded"
    assert after["gum"] == before["gum"] == 1, "the camera was asked for again"
    assert "pre-join" not in after["screens"][after["screens"].index("call") :]  # type: ignore[attr-defined,index]
    alice.expect_screen("call")
    alice.expect_video_playing("Bob", rising_by=10)
    bob.expect_video_playing("Alice", rising_by=10)
    # The resumed socket carries the call again: unmute reaches Bob.
    alice.button("Mute microphone").click()
    expect(bob.tile("Alice")).to_have_attribute("data-audio", "on")
    # And keeps carrying it: the gateway still acknowledges Alice's heartbeats after a
    # heartbeat timeout has run since the resume (a dead resumed socket, or heartbeats that
    # stopped, would have made her leave by then).
    timeout_s = float(E2E_ENV["CALL_HEARTBEAT_TIMEOUT_S"])
    deadline = time.monotonic() + timeout_s + 30
    while not any(at > resumed_at + timeout_s for at in heartbeats):
        assert time.monotonic() < deadline, f"heartbeats stopped after the resume: {heartbeats}"
        alice.page.wait_for_timeout(500)  # lets Playwright deliver the frames meanwhile
    expect(bob.tile("Alice")).to_have_attribute("data-connection", "connected")
    expect(bob.tile("Alice")).to_have_attribute("data-audio", "on")
    alice.expect_screen("call")

    alice.button("Hang up").click()
    bob.expect_screen("conversations")
