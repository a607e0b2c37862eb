"""Journey 5: keyboard only. Sign in, start a call, mute, leave, without a mouse; every
control of every screen on the way has an accessible name (Playwright's aria snapshot)."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import PeopleFactory, put_conversation
from tests.e2e.people import Person, unnamed_controls
from tests.support.gateways import GatewayCluster

pytestmark = pytest.mark.timeout(240)


def assert_all_named(person: Person, where: str) -> str:
    snapshot = person.page.locator("body").aria_snapshot()
    missing = unnamed_controls(snapshot)
    assert not missing, f"{where}: controls without an accessible name: {missing}\n{snapshot}"
    return snapshot


def test_unnamed_controls_are_found() -> None:
    snapshot = (
        '- button "Mute microphone" [pressed]\n- button [pressed]\n- combobox:\n- textbox "Name"'
    )
    assert unnamed_controls(snapshot) == ["- button", "- combobox"]


def test_call_by_keyboard_only(people: PeopleFactory, gateway: GatewayCluster, uid: str) -> None:
    conversation = f"direct-{uid}"
    title = f"Keys {uid[:4]}"
    put_conversation(gateway, conversation, "DIRECT", {"alice": "member", "bob": "member"}, title)
    alice, bob = people("alice"), people("bob")
    bob.sign_in("bob")

    page = alice.page
    keys = page.keyboard
    page.goto("/")
    alice.expect_screen("sign-in")
    assert_all_named(alice, "sign-in")
    alice.tab_to(page.get_by_label("User id"))
    keys.type("alice")
    keys.press("Enter")
    alice.expect_screen("conversations")
    call_button = alice.button(f"Call {title}")
    expect(call_button).to_be_visible()
    assert_all_named(alice, "conversations")

    alice.tab_to(call_button)
    keys.press("Enter")
    alice.expect_screen("pre-join")
    start = alice.button("Start call")
    expect(start).to_be_enabled(timeout=20_000)
    assert_all_named(alice, "pre-join")
    alice.tab_to(start)
    keys.press("Enter")
    alice.expect_screen("call")

    # Bob answers by keyboard too: the prompt takes the focus on its Accept button.
    prompt = bob.page.get_by_role("alertdialog")
    expect(prompt).to_be_visible()
    assert_all_named(bob, "incoming call")
    expect(prompt.get_by_role("button", name="Accept")).to_be_focused()
    bob.page.keyboard.press("Enter")
    bob.expect_screen("call")
    alice.expect_video_playing("Bob", rising_by=3)

    snapshot = assert_all_named(alice, "call")
    for name in ("Mute microphone", "Turn camera off", "Share screen", "Captions", "Hang up"):
        assert f'button "{name}"' in snapshot, f"{name} missing from the call screen:\n{snapshot}"

    mute = alice.button("Mute microphone")
    alice.tab_to(mute)
    keys.press("Space")
    expect(mute).to_have_attribute("aria-pressed", "true")
    expect(bob.tile("Alice")).to_have_attribute("data-audio", "off")
    alice.screenshot("journey5-keyboard-call")

    hang_up = alice.button("Hang up")
    alice.tab_to(hang_up)
    keys.press("Enter")
    alice.expect_screen("conversations")
    bob.expect_screen("conversations")
    assert alice.marker()["gum"] == 1, "one camera/microphone request for the whole call"
