"""Ringing and refusals as a person sees them: a declined call, a missed call with its
notice, a server refusal shown in words, history not available (said, not silent)."""

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import E2E_ENV, PeopleFactory, put_conversation
from tests.support.gateways import OPERATOR_TOKEN, GatewayCluster
from tests.support.nats_server import NatsServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def quick_ring(nats_server: NatsServer) -> Iterator[GatewayCluster]:
    """A gateway whose rings time out after 3 s (for the missed-call notice)."""
    cluster = GatewayCluster(
        nats_server.url, count=1, env={**E2E_ENV, "CALL_RING_TIMEOUT_S": "3"}
    ).start()
    yield cluster
    cluster.stop()


def test_a_declined_call_says_so_to_the_caller(
    people: PeopleFactory, gateway: GatewayCluster, uid: str
) -> None:
    title = f"Decline {uid[:4]}"
    put_conversation(gateway, f"d-{uid}", "DIRECT", {"alice": "member", "bob": "member"}, title)
    alice, bob = people("alice"), people("bob")
    alice.sign_in("alice")
    bob.sign_in("bob")
    alice.start_call(title)
    prompt = bob.page.get_by_role("alertdialog")
    expect(prompt).to_be_visible()
    prompt.get_by_role("button", name="Decline").click()
    expect(prompt).to_be_hidden()
    alice.expect_screen("conversations")
    expect(alice.banner()).to_contain_text("The call was declined")
    bob.expect_screen("conversations")


def test_an_unanswered_call_leaves_a_missed_call_notice(
    people: PeopleFactory, quick_ring: GatewayCluster, uid: str
) -> None:
    title = f"Missed {uid[:4]}"
    members = {"alice": "member", "bob": "member"}
    put_conversation(quick_ring, f"d-{uid}", "DIRECT", members, title)
    alice = people("alice", base_url=quick_ring.urls[0])
    bob = people("bob", base_url=quick_ring.urls[0])
    alice.sign_in("alice")
    bob.sign_in("bob")
    alice.start_call(title)
    prompt = bob.page.get_by_role("alertdialog")
    expect(prompt).to_contain_text("s left")
    # Nobody answers: the prompt goes, a notice stays, the caller hears "no answer".
    expect(prompt).to_be_hidden(timeout=15_000)
    expect(bob.page.get_by_role("region", name="Missed calls")).to_contain_text(
        f"Missed call from Alice in {title}", timeout=15_000
    )
    alice.expect_screen("conversations")
    expect(alice.banner()).to_contain_text("No answer")
    bob.screenshot("missed-call-notice")
    bob.button("Dismiss missed call from Alice").click()
    expect(bob.page.get_by_role("region", name="Missed calls")).to_be_hidden()


def test_server_refusals_and_missing_history_read_as_sentences(
    people: PeopleFactory, gateway: GatewayCluster, uid: str
) -> None:
    title = f"Gone {uid[:4]}"
    conversation = f"g-{uid}"
    put_conversation(gateway, conversation, "GROUP", {"alice": "member", "bob": "member"}, title)
    alice = people("alice")
    alice.sign_in("alice")

    alice.button(f"Call history of {title}").click()
    alice.expect_screen("history")
    expect(alice.page.locator(".history").get_by_role("status")).to_contain_text(
        "Call history is not available on this server (call history is not configured"
    )
    alice.button("Back to conversations").click()
    alice.expect_screen("conversations")

    # Alice is taken out of the conversation while she is about to call it (her list may
    # refresh and drop it at any moment after, so she is on the pre-join screen first).
    alice.button(f"Call {title}").click()
    start = alice.button("Start call")
    expect(start).to_be_enabled()
    resp = httpx.put(
        f"{gateway.urls[0]}/api/admin/conversations/{conversation}",
        json={"type": "GROUP", "title": title, "members": [{"userId": "bob"}]},
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        timeout=10,
    )
    resp.raise_for_status()
    start.click()
    refusal = alice.page.locator(".form-status").get_by_role("alert")
    expect(refusal).to_have_text("Not allowed: not a member of this conversation")
    alice.expect_screen("pre-join")
    expect(start).to_be_enabled()
    alice.screenshot("server-refusal")
