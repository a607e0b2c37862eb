"""Journey 2 and a failing direct path: calls moving between peer-to-peer and the SFU.

A GROUP call grows to three and moves to the SFU, then shrinks and comes back.

Alice and Bob talk peer-to-peer; Carol joins; the badge turns SFU for all three and each
sees two remote videos playing (decoded frames and presented frames rising, carried by the
SFU); Carol leaves and the call goes back to P2P. Alice's and Bob's video never stops: the
frames each presents of the other keep rising through both switches, and the tile never
goes without a picture while the camera is on (``data-video-losses`` stays unset).

The system is the e2e stack (gateway, mode selector with pre-warm on, media node): Alice's
and Bob's sessions are pre-warmed (the conversation has three members), so the move to the
SFU only puts their tracks on; Carol's is opened cold.

A DIRECT call whose direct video stops (Bob's sender loses its track) is reported by Alice's
page (``call:media-health``, frames stalled) and moves to the SFU, where both see each other
again.
"""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import PeopleFactory, put_conversation
from tests.e2e.people import Person
from tests.support.call_stack import CallStack

pytestmark = pytest.mark.timeout(300)

#: A migration waits for every browser's new path (on two busy cores: seconds).
SWITCH_TIMEOUT_MS = 60_000


def presented(viewer: Person, name: str) -> int:
    return int(viewer.tile(name).get_attribute("data-frames-presented") or 0)


def expect_badge(person: Person, text: str) -> None:
    expect(person.page.locator(".mode-badge")).to_have_text(text, timeout=SWITCH_TIMEOUT_MS)


def expect_carried(viewer: Person, name: str, path: str) -> None:
    expect(viewer.tile(name)).to_have_attribute("data-path", path, timeout=SWITCH_TIMEOUT_MS)
    viewer.expect_video_playing(name, rising_by=5)


def never_lost(viewer: Person, name: str) -> None:
    losses = viewer.tile(name).get_attribute("data-video-losses")
    assert losses is None, f"{viewer.name} lost {name}'s picture {losses} time(s)"


def test_a_group_call_moves_to_the_sfu_and_back_without_a_break(
    people: PeopleFactory, gateway: CallStack, uid: str
) -> None:
    title = f"Team {uid[:4]}"
    members = {"alice": "admin", "bob": "member", "carol": "member"}
    put_conversation(gateway, f"group-{uid}", "GROUP", members, title)
    alice, bob, carol = people("alice"), people("bob"), people("carol")
    for person in (alice, bob, carol):
        person.sign_in(person.name)

    alice.start_call(title)
    bob.accept_incoming()
    alice.expect_video_playing("Bob")
    bob.expect_video_playing("Alice")
    expect_badge(alice, "P2P")
    expect_badge(bob, "P2P")
    assert alice.tile("Bob").get_attribute("data-path") == "p2p"
    before = {"alice": presented(alice, "Bob"), "bob": presented(bob, "Alice")}

    # Carol answers the ring: three in a GROUP call, so it moves to the SFU.
    carol.accept_incoming()
    for person in (alice, bob, carol):
        expect_badge(person, "SFU")
    seen_by = [(alice, ("Bob", "Carol")), (bob, ("Alice", "Carol")), (carol, ("Alice", "Bob"))]
    for viewer, others in seen_by:
        for name in others:
            expect_carried(viewer, name, "sfu")
        expect(viewer.page.locator('.tile[data-self="false"]')).to_have_count(2)
    on_sfu = {"alice": presented(alice, "Bob"), "bob": presented(bob, "Alice")}
    assert on_sfu["alice"] > before["alice"] and on_sfu["bob"] > before["bob"], (before, on_sfu)
    never_lost(alice, "Bob")
    never_lost(bob, "Alice")
    for person in (alice, bob, carol):
        person.screenshot("group-on-sfu")
    assert carol.marker()["gum"] == 1 and alice.marker()["gum"] == 1, "a second camera prompt"

    # Carol leaves: two again, back to peer-to-peer (after the selector's hold).
    carol.button("Leave call").click()
    carol.expect_screen("conversations")
    for person in (alice, bob):
        expect_badge(person, "P2P")
        expect(person.page.locator('.tile[data-self="false"]')).to_have_count(1)
    expect_carried(alice, "Bob", "p2p")
    expect_carried(bob, "Alice", "p2p")
    after = {"alice": presented(alice, "Bob"), "bob": presented(bob, "Alice")}
    assert after["alice"] > on_sfu["alice"] and after["bob"] > on_sfu["bob"], (on_sfu, after)
    never_lost(alice, "Bob")
    never_lost(bob, "Alice")
    assert alice.marker()["gum"] == 1 and bob.marker()["gum"] == 1, "a second camera prompt"
    alice.screenshot("group-back-to-p2p")

    bob.button("Leave call").click()
    bob.expect_screen("conversations")
    alice.button("Leave call").click()
    alice.expect_screen("conversations")


def test_a_direct_call_whose_video_stops_moves_to_the_sfu(
    people: PeopleFactory, gateway: CallStack, uid: str
) -> None:
    title = f"Stall {uid[:4]}"
    put_conversation(gateway, f"d-{uid}", "DIRECT", {"alice": "member", "bob": "member"}, title)
    alice, bob = people("alice"), people("bob")
    alice.sign_in("alice")
    bob.sign_in("bob")
    alice.start_call(title)
    bob.accept_incoming()
    alice.expect_video_playing("Bob")
    bob.expect_video_playing("Alice")
    expect_badge(alice, "P2P")

    # The direct path stops carrying Bob's video (his camera is still on).
    bob.page.evaluate(
        """() => window.__meeshy.pcs.forEach((pc) => pc.getSenders()
             .filter((s) => s.track && s.track.kind === 'video')
             .forEach((s) => s.replaceTrack(null)))"""
    )
    for person in (alice, bob):
        expect_badge(person, "SFU")
    expect_carried(alice, "Bob", "sfu")
    expect_carried(bob, "Alice", "sfu")
    assert alice.marker()["gum"] == 1 and bob.marker()["gum"] == 1, "a second camera prompt"
    alice.screenshot("direct-moved-to-sfu")
    alice.button("Hang up").click()
    bob.expect_screen("conversations")
