"""Journey 4: a guest joins a GROUP call by its share link and is seen by the others; a
DIRECT conversation's link is refused with a clear message on the page."""

import re
import time

import pytest
from playwright.sync_api import expect

from gateway.settings import GatewaySettings
from gateway.tokens import TokenService
from tests.e2e.conftest import PeopleFactory, put_conversation
from tests.support.gateways import JWT_SECRET, GatewayCluster

pytestmark = pytest.mark.timeout(240)


def test_guest_joins_a_group_call_by_share_link(
    people: PeopleFactory, gateway: GatewayCluster, uid: str
) -> None:
    conversation = f"group-{uid}"
    title = f"Team {uid[:4]}"
    put_conversation(
        gateway,
        conversation,
        "GROUP",
        {"alice": "admin", "bob": "member", "carol": "member"},
        title,
    )
    alice, bob = people("alice"), people("bob")
    alice.sign_in("alice")
    bob.sign_in("bob")
    alice.start_call(title)
    bob.accept_incoming()
    alice.expect_video_playing("Bob", rising_by=3)

    alice.button("Copy share link").click()
    url_box = alice.page.get_by_label("Share link for guests")
    expect(url_box).to_have_value(re.compile(r"/join\?link=."))
    link = url_box.input_value()
    assert link.startswith(gateway.urls[0])

    guest = people("guest")
    guest.page.goto(link)
    guest.expect_screen("guest-join")
    guest.page.get_by_label("Your name").fill("Zoé")
    guest.page.get_by_label("Language you speak").select_option("fr")
    guest.button("Join call").click()
    guest.expect_screen("call")

    # The guest sees both members, and both see the guest, with a guest badge.
    guest.expect_video_playing("Alice")
    guest.expect_video_playing("Bob")
    for member in (alice, bob):
        member.expect_video_playing("Zoé")
        expect(member.tile("Zoé").locator(".badge.guest")).to_have_text("Guest")
        expect(member.page.locator(".video-grid")).to_have_attribute("data-count", "3")
    # A guest never hands out links of its own.
    expect(guest.button("Copy share link")).to_be_hidden()
    for person in (alice, bob, guest):
        person.screenshot("journey4-guest-in-group-call")

    guest.button("Leave call").click()
    guest.expect_screen("guest-message")
    expect(alice.tile("Zoé")).to_have_count(0)
    expect(alice.page.locator(".video-grid")).to_have_attribute("data-count", "2")
    alice.button("End call for everyone").click()
    alice.expect_screen("conversations")
    bob.expect_screen("conversations")


def test_a_direct_conversation_link_is_refused(
    people: PeopleFactory, gateway: GatewayCluster, uid: str
) -> None:
    conversation = f"direct-{uid}"
    put_conversation(gateway, conversation, "DIRECT", {"alice": "member", "bob": "member"}, "AB")
    # A link signed by the gateway itself, but naming a DIRECT conversation (the API never
    # issues one: this is a stale or hand-made link).
    settings = GatewaySettings(jwt_secret=JWT_SECRET)
    token = TokenService(settings).issue_link_token(f"lnk-{uid}", conversation, time.time() + 3600)
    guest = people("guest")
    guest.page.goto(f"/join?link={token}")
    guest.page.get_by_label("Your name").fill("Mallory")
    guest.button("Join call").click()
    refusal = guest.page.locator(".form-status").get_by_role("alert")
    expect(refusal).to_contain_text("direct (one-to-one) calls never admit guests")
    expect(guest.button("Join call")).to_be_disabled()
    guest.screenshot("journey4-direct-link-refused")
