"""Journey 1: A calls B, B accepts, both see the other's video playing, mute shows on the
other side, A hangs up, both are back at their conversations."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import PeopleFactory, put_conversation
from tests.support.gateways import GatewayCluster

pytestmark = pytest.mark.timeout(240)


def test_a_calls_b_and_both_see_each_other(
    people: PeopleFactory, gateway: GatewayCluster, uid: str
) -> None:
    conversation = f"direct-{uid}"
    title = f"Alice and Bob {uid[:4]}"
    put_conversation(gateway, conversation, "DIRECT", {"alice": "member", "bob": "member"}, title)
    alice, bob = people("alice"), people("bob")
    alice.sign_in("alice")
    bob.sign_in("bob")

    alice.start_call(title)
    expect(alice.page.locator(".call-status")).to_contain_text("Calling")
    # A DIRECT call never admits guests: no share link to hand out.
    expect(alice.button("Copy share link")).to_be_hidden()

    prompt = bob.page.get_by_role("alertdialog")
    expect(prompt).to_contain_text("Alice is calling")
    expect(prompt).to_contain_text("s left")
    bob.accept_incoming()

    alice_sees = alice.expect_video_playing("Bob")
    bob_sees = bob.expect_video_playing("Alice")
    assert alice_sees[0] > 0 and bob_sees[0] > 0
    expect(alice.page.locator(".mode-badge")).to_have_text("P2P")
    # Connection figures from getStats on the other's tile.
    expect(alice.tile("Bob").locator(".tile-stats")).to_contain_text("RTT")

    alice.button("Mute microphone").click()
    expect(alice.button("Mute microphone")).to_have_attribute("aria-pressed", "true")
    on_bob = bob.tile("Alice")
    expect(on_bob).to_have_attribute("data-audio", "off")
    expect(on_bob.locator(".badge.muted")).to_have_text("Muted")
    # Bob's video of Alice keeps playing while she is muted.
    bob.expect_video_playing("Alice", rising_by=5)
    alice.screenshot("journey1-direct-call")
    bob.screenshot("journey1-direct-call")

    alice.button("Hang up").click()
    alice.expect_screen("conversations")
    bob.expect_screen("conversations")
    expect(bob.banner()).to_contain_text("The call has ended")
    expect(alice.button(f"Call {title}")).to_be_visible()
    expect(bob.button(f"Call {title}")).to_be_visible()
