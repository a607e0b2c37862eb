"""Network trouble for one participant of a direct (P2P) call: Alice's media datagrams are
lost for a while, then flow again.

Both browsers reach each other only through a loopback UDP relay
(:mod:`tests.support.udp_relay`): an init script rewrites every remote ICE candidate a page
is given (``a=candidate`` lines of ``setRemoteDescription`` and ``addIceCandidate``) to a
relay address the test hands out (``context.expose_function``), and drops the candidates
the relay cannot carry (TCP, IPv6), so no direct path can form. Then the relay loses every
datagram involving Alice, both ways, until the web client has noticed (ICE
``disconnected``/``failed``) and restarted ICE (``restartIce``, web/src/media/p2pMesh.ts),
and at least ``DROP_S``.

What a person expects: the call carries on by itself: both videos play again, Alice is
still on the call screen as the same participant (no reload, no second camera prompt),
and nobody was marked as having left.
"""

import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import PeopleFactory, put_conversation
from tests.e2e.people import Person
from tests.support.gateways import GatewayCluster
from tests.support.udp_relay import Relay, ThreadedUdpRelay, rewrite_candidate

pytestmark = pytest.mark.timeout(240)

#: The shortest time Alice's datagrams are lost (the controlled fault).
DROP_S = 8.0

#: Routes every remote candidate through ``window.__relayCandidates`` (the test's relay),
#: counts ``restartIce`` calls and records every ICE connection state the page's peer
#: connections report. The rewritten calls are chained per connection, so the page's
#: order of ``setRemoteDescription`` / ``addIceCandidate`` is kept.
RELAY_SCRIPT = """
(() => {
  const Base = window.RTCPeerConnection;
  if (!Base) return;
  const net = (window.__net = { restarts: 0, states: [] });
  const relayed = async (candidates) =>
    candidates.length ? window.__relayCandidates(candidates) : [];
  const Relayed = class extends Base {
    constructor(...args) {
      super(...args);
      this.__chain = Promise.resolve();
      this.addEventListener('iceconnectionstatechange', () => {
        net.states.push(this.iceConnectionState);
      });
    }
  };
  const chained = (pc, run) => {
    const result = pc.__chain.then(run, run);
    pc.__chain = result.catch(() => undefined);
    return result;
  };
  const setRemote = Base.prototype.setRemoteDescription;
  Relayed.prototype.setRemoteDescription = function (desc) {
    return chained(this, async () => {
      if (!desc || !desc.sdp) return setRemote.call(this, desc);
      const lines = desc.sdp.split('\\r\\n');
      const found = lines.filter((l) => l.startsWith('a=candidate:')).map((l) => l.slice(2));
      const routed = await relayed(found);
      let i = 0;
      const kept = [];
      for (const line of lines) {
        if (!line.startsWith('a=candidate:')) kept.push(line);
        else if (routed[i++]) kept.push('a=' + routed[i - 1]);
      }
      return setRemote.call(this, { type: desc.type, sdp: kept.join('\\r\\n') });
    });
  };
  const addCandidate = Base.prototype.addIceCandidate;
  Relayed.prototype.addIceCandidate = function (c) {
    return chained(this, async () => {
      if (!c || !c.candidate) return addCandidate.call(this, c);
      const [routed] = await relayed([c.candidate]);
      if (!routed) return undefined;  // TCP or IPv6: the relay cannot carry it
      return addCandidate.call(this, {
        candidate: routed,
        sdpMid: c.sdpMid,
        sdpMLineIndex: c.sdpMLineIndex,
        usernameFragment: c.usernameFragment,
      });
    });
  };
  const restart = Base.prototype.restartIce;
  Relayed.prototype.restartIce = function () {
    net.restarts += 1;
    return restart.call(this);
  };
  window.RTCPeerConnection = Relayed;
})();
"""

#: ICE state and local ufrag of the page's open peer connections.
PC_STATE = """() => window.__meeshy.pcs
  .filter((pc) => pc.connectionState !== 'closed')
  .map((pc) => ({
    ice: pc.iceConnectionState,
    ufrag: ((pc.localDescription && pc.localDescription.sdp) || '')
      .match(/a=ice-ufrag:(\\S+)/)?.[1] ?? null,
  }))"""


@pytest.fixture
def relay() -> Iterator[ThreadedUdpRelay]:
    with ThreadedUdpRelay() as r:
        yield r


def route_through(person: Person, other: str, relay: ThreadedUdpRelay) -> None:
    """Every candidate ``person``'s page receives goes through the relay, labelled
    ``<owner>:<asker>``. The page does not say whose a candidate is: in a two-person P2P
    call every remote candidate is the other's (a media node's, were the call to move to
    the SFU, would be labelled the same: the test asserts it stays P2P)."""
    label = f"{other}:{person.name}"

    def via(candidates: list[str]) -> list[str | None]:
        return [
            rewrite_candidate(c, lambda target: relay.relay_for(target, label)) for c in candidates
        ]

    person.context.expose_function("__relayCandidates", via)
    person.context.add_init_script(RELAY_SCRIPT)


def involves(name: str) -> Callable[[Relay], bool]:
    return lambda r: name in r.label.split(":")


def restarts(*people: Person) -> int:
    """``restartIce`` calls the pages made."""
    return sum(int(p.page.evaluate("() => window.__net.restarts")) for p in people)


def ice_states(*people: Person) -> list[str]:
    """Every ICE connection state the pages' peer connections reported, in order."""
    return [s for p in people for s in p.page.evaluate("() => window.__net.states")]


def pc_state(person: Person) -> list[dict[str, str | None]]:
    value: list[dict[str, str | None]] = person.page.evaluate(PC_STATE)
    return value


def mark(*people: Person, text: str) -> None:
    """A line in each page's console (kept as an artifact), to read its log against."""
    for p in people:
        p.page.evaluate("t => console.info(t)", text)


def wait_until(person: Person, check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` (it reads the pages and the relay) until it holds; Playwright keeps
    delivering the pages' calls to ``__relayCandidates`` meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never happened within {timeout_s} s: {what}"
        person.page.wait_for_timeout(200)


def test_ice_restart_brings_a_participant_back_after_losing_its_packets(
    people: PeopleFactory, gateway: GatewayCluster, relay: ThreadedUdpRelay, uid: str
) -> None:
    conversation = f"direct-{uid}"
    title = f"Lossy {uid[:4]}"
    put_conversation(gateway, conversation, "DIRECT", {"alice": "member", "bob": "member"}, title)
    alice, bob = people("alice"), people("bob")
    route_through(alice, "bob", relay)
    route_through(bob, "alice", relay)
    alice.sign_in("alice")
    bob.sign_in("bob")
    alice.start_call(title)
    bob.accept_incoming()
    alice.expect_video_playing("Bob", rising_by=10)
    bob.expect_video_playing("Alice", rising_by=10)
    expect(alice.page.locator(".mode-badge")).to_have_text("P2P")

    # The media goes through the relay, both ways, and only through it.
    alices = involves("alice")
    assert relay.matching(lambda r: r.label == "bob:alice"), "Alice's page got no candidate"
    assert relay.matching(lambda r: r.label == "alice:bob"), "Bob's page got no candidate"
    assert relay.forwarded(alices) > 0
    participant_before = bob.tile("Alice").get_attribute("data-participant-id")
    ufrags_before = {s["ufrag"] for s in pc_state(alice)}
    before = alice.marker()
    restarts_before = restarts(alice, bob)

    # --- the trouble ------------------------------------------------------------------------
    relay.drop(alices)
    dropped_at = time.monotonic()
    mark(alice, bob, text="test: Alice's datagrams are being lost")

    def saw_trouble() -> bool:
        states = ice_states(alice, bob)
        return "disconnected" in states or "failed" in states

    def restarted() -> bool:
        return restarts(alice, bob) > restarts_before

    wait_until(alice, saw_trouble, 30, "a peer connection reported ICE disconnected/failed")
    # Kept down until the client has restarted ICE (it waits a grace period first), and for
    # at least DROP_S in all: the fault's controlled length.
    wait_until(alice, restarted, 30, "the web client restarted ICE")
    alice.page.wait_for_timeout(max(0.0, DROP_S - (time.monotonic() - dropped_at)) * 1000)
    lost = relay.dropped(alices)
    assert lost > 0, "the relay lost nothing: a direct path bypassed it"
    alice.screenshot("network-trouble-dropped")
    relay.restore()
    carried_before = relay.forwarded(alices)
    mark(alice, bob, text="test: Alice's datagrams flow again")

    # --- back -------------------------------------------------------------------------------
    wait_until(
        alice,
        lambda: (
            any(s["ice"] in ("connected", "completed") for s in pc_state(alice))
            and any(s["ice"] in ("connected", "completed") for s in pc_state(bob))
        ),
        60,
        "ICE connected again on both sides",
    )
    alice.expect_video_playing("Bob", rising_by=10)
    bob.expect_video_playing("Alice", rising_by=10)
    # A new ICE generation (the restart), carried by the relay again.
    ufrags_after = {s["ufrag"] for s in pc_state(alice)}
    assert ufrags_after and ufrags_after.isdisjoint(ufrags_before), (ufrags_before, ufrags_after)
    assert relay.forwarded(alices) > carried_before

    # The same participant on the same call screen, with the same page and camera.
    alice.expect_screen("call")
    bob.expect_screen("call")
    assert bob.tile("Alice").get_attribute("data-participant-id") == participant_before
    expect(bob.tile("Alice")).to_have_attribute("data-connection", "connected")
    expect(alice.tile("Bob")).to_be_visible()
    after = alice.marker()
    assert after["loadedAt"] == before["loadedAt"], "the page was reloaded"
    assert after["gum"] == before["gum"] == 1, "the camera was asked for again"
    assert "pre-join" not in after["screens"][after["screens"].index("call") :]  # type: ignore[attr-defined,index]
    for person in (alice, bob):
        screens = person.marker()["screens"]
        assert screens[-1] == "call", (person.name, screens)  # type: ignore[index]
    expect(alice.page.locator(".mode-badge")).to_have_text("P2P")

    alice.button("Hang up").click()
    bob.expect_screen("conversations")
