"""Least privilege on NATS, statically: the roles of ``schemas/permissions.py`` say what the
issue asks, the deployed configuration is generated from them, compose.yaml gives each
service its own user, and the embedded stack binds loopback only.

What each service really publishes and subscribes to is checked at run time: every
integration test runs the services under these permissions and fails on any refusal the
test nats-server logs (``tests/conftest.py``); ``tests/integration/test_nats_permissions.py``
shows the refusals themselves.
"""

from pathlib import Path
from typing import Any

import yaml

from devstack.components import NatsComponent, ServiceComponent, StackPaths, default_components
from schemas import permissions, subjects
from schemas.permissions import ROLES, allows

ROOT = Path(__file__).resolve().parents[2]


def publishers_of(subject: str) -> set[str]:
    return {name for name, role in ROLES.items() if allows(role.publish_allow(), subject)}


def subscribers_of(subject: str) -> set[str]:
    return {name for name, role in ROLES.items() if allows(role.subscribe_allow(), subject)}


def test_the_matcher_follows_nats_wildcards() -> None:
    assert allows(["a.*.c"], "a.b.c") and not allows(["a.*.c"], "a.b.c.d")
    assert allows(["a.>"], "a.b.c") and not allows(["a.>"], "a")
    assert not allows(["a.b"], "a.b.c") and allows(["a.b"], "a.b")


def test_only_gateways_publish_signals_and_only_gateways_and_the_selector_call_media_rpc() -> None:
    assert publishers_of(subjects.user_signal("alice")) == {"gateway"}
    assert publishers_of(subjects.media_rpc("node-1", "open_session")) == {"gateway", "selector"}
    assert subscribers_of(subjects.media_rpc("node-1", "open_session")) == {"media_node"}


def test_a_transcriber_cannot_publish_call_commands_or_events() -> None:
    assert "transcriber" not in publishers_of(subjects.call_command("c1", "end"))
    assert "transcriber" not in publishers_of(subjects.call_event("c1", "ended"))
    assert publishers_of(subjects.call_command("c1", "end")) == {"gateway", "selector"}


def test_the_analyst_and_the_supervisor_publish_nothing_but_requests_of_their_own() -> None:
    for name in ("analyst", "supervisor"):
        role = ROLES[name]
        for subject in role.publish_allow():
            assert subject.startswith(("$JS.", "dlq.")), (name, subject)


def test_each_role_reads_only_its_own_replies_and_no_one_deletes_streams() -> None:
    for name, role in ROLES.items():
        inboxes = [s for s in role.subscribe_allow() if s.startswith("_INBOX")]
        assert inboxes == [subjects.inboxes_of(name)]
        for other in ROLES:
            if other != name:
                assert not allows(role.subscribe_allow(), f"{subjects.inbox_prefix(other)}.x")
        for subject in role.publish_allow():
            assert ".DELETE." not in subject  # no stream, consumer or message deleted
            assert ".PURGE." not in subject


def test_consumers_are_granted_by_name_to_their_own_role_only() -> None:
    """Create, pull from and acknowledge a durable: its own role only; nobody may address
    a consumer by a wildcard name but to look it up (read-only: ordered consumers)."""
    durables = {
        (subjects.CALL_EVENTS_STREAM, subjects.SELECTOR_DURABLE): "selector",
        (subjects.AUDIO_CHUNKS_STREAM, subjects.TRANSCRIBER_DURABLE): "transcriber",
        (
            subjects.CALL_EVENTS_STREAM,
            subjects.archive_consumer(subjects.ARCHIVE_DURABLE, subjects.ARCHIVE_EVENTS),
        ): "archive",
    }
    for (stream, name), owner in durables.items():
        ops = [
            *subjects.js_durable_create(stream, name),
            subjects.js_consumer_api("MSG.NEXT", stream, name),
            f"{subjects.js_acks(stream, name)[:-2]}.1.2.3.4.0",
        ]
        for op in ops:
            assert {r for r, role in ROLES.items() if allows(role.publish_allow(), op)} == {
                owner
            }, op
    for role in ROLES.values():
        for subject in role.publish_allow():
            if subject.startswith(("$JS.API.CONSUMER.", "$JS.ACK.")):
                parts = subject.split(".")
                # Any name only to look up (nats-py's ordered consumers are server-named).
                assert "*" not in parts or parts[3] == "INFO", (role.name, subject)
                # CREATE.<stream>.> would be any name: only CREATE.<stream>.<name>.>
                assert parts[3:4] != ["CREATE"] or parts[5:] != [">"], (role.name, subject)


def test_only_the_gateway_runs_ordered_consumers_on_call_events() -> None:
    """The server-named create also updates a consumer named in its body: on
    ``CALL_EVENTS``, where the selector's and the archive's durables are, only the
    gateway (its event feed) may send it; the analyst runs no consumer at all."""
    create = subjects.js_ephemeral_create(subjects.CALL_EVENTS_STREAM)
    assert {r for r, role in ROLES.items() if allows(role.publish_allow(), create)} == {"gateway"}
    analyst = ROLES["analyst"].publish_allow()
    assert not any(s.startswith(("$JS.API.CONSUMER.", "$JS.ACK.", "$JS.FC.")) for s in analyst)
    # Looking up a consumer tells its position, never a message.
    info = subjects.js_consumer_info_any(subjects.CALL_EVENTS_STREAM)
    assert {r for r, role in ROLES.items() if allows(role.publish_allow(), info)} == {"gateway"}
    assert allows(analyst, subjects.js_stream_api("MSG.GET", subjects.CALL_EVENTS_STREAM))


def test_captions_and_signals_are_read_only_by_the_gateway() -> None:
    assert subscribers_of(subjects.user_signal("alice")) == {"gateway"}
    assert subscribers_of(subjects.caption("c1", "fr")) == {"gateway"}


def test_the_deployed_configuration_is_generated_from_the_roles() -> None:
    on_disk = (ROOT / "deploy" / "nats" / "auth.conf").read_text()
    assert on_disk == permissions.deployed_config(), (
        "regenerate: python -m schemas.permissions > deploy/nats/auth.conf"
    )
    assert "no_auth_user" not in on_disk  # a deployment has no anonymous user


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


MODULE_ROLE = {
    "gateway": "gateway",
    "gateway.selector": "selector",
    "gateway.archive": "archive",
    "media_node": "media_node",
    "transcriber": "transcriber",
    "translator_bridge": "translator_bridge",
}


def test_compose_gives_each_service_its_own_nats_user() -> None:
    services = _compose()["services"]
    ours = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("meeshy-calls")}
    assert ours
    for name, svc in ours.items():
        env = svc["environment"]
        role = MODULE_ROLE[svc["command"][2]]
        assert env["NATS_USER"] == role, name
        assert permissions.password_variable(role) in env["NATS_PASSWORD"], name
        assert env["PRODUCTION_MODE"] == "true", name
    for node in ("nats-1", "nats-2", "nats-3"):
        nats = services[node]
        assert "/etc/nats/auth.conf" in nats["command"]
        assert any("deploy/nats/auth.conf" in v for v in nats["volumes"])
        for deployed in permissions.DEPLOYED_ROLES:
            assert permissions.password_variable(deployed.name) in nats["environment"]


def test_the_embedded_stack_gives_each_service_its_role_and_binds_loopback(
    tmp_path: Path,
) -> None:
    components = default_components(StackPaths(tmp_path), environ={})
    nats = next(c for c in components if isinstance(c, NatsComponent))
    argv = nats.argv()
    assert argv[argv.index("--addr") + 1] == "127.0.0.1"
    conf = nats.auth_config.read_text()
    assert nats.auth_config.stat().st_mode & 0o077 == 0  # passwords readable by us only
    for role in ROLES:
        assert nats.passwords[role] in conf
    # Without credentials: the read-only analyst (meeshy-tap), never an all-access user.
    assert 'no_auth_user: "analyst"' in conf
    services = [c for c in components if isinstance(c, ServiceComponent)]
    assert {s.kind for s in services} <= set(ROLES)
    for svc in services:
        assert svc.env["NATS_USER"] == svc.kind
        assert svc.env["NATS_PASSWORD"] == nats.passwords[svc.kind]
        assert svc.env.get("METRICS_HOST", "127.0.0.1") == "127.0.0.1"
        assert svc.env.get("GATEWAY_HOST", "127.0.0.1") == "127.0.0.1"
    media = next(s for s in services if s.kind == "media_node")
    assert media.env["MEDIA_NODE_ICE_ADDRESSES"] == "127.0.0.1"
    for component in components:
        argv = component.argv()
        for flag in ("--addr", "--host", "--bind", "--bind_ip"):
            if flag in argv:
                assert argv[argv.index(flag) + 1] == "127.0.0.1", (component.name, flag)


def test_the_media_node_binds_its_ice_sockets_where_it_is_told() -> None:
    import aioice.ice

    from media_node import aiortc_hooks
    from media_node.settings import MediaNodeSettings

    original = aioice.ice.get_host_addresses
    try:
        settings = MediaNodeSettings(media_node_ice_addresses="127.0.0.1, ::1")
        aiortc_hooks.restrict_host_addresses(settings.ice_addresses())
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    finally:
        aioice.ice.get_host_addresses = original


def test_each_stream_has_one_owner_kind() -> None:
    """Only the gateway creates or changes the durable streams; ``AUDIO_CHUNKS`` belongs
    to its producers and its consumers (media nodes, transcribers)."""
    owners = {
        subjects.CALL_EVENTS_STREAM: {"gateway"},
        subjects.TRANSCRIPTS_STREAM: {"gateway"},
        subjects.DEAD_LETTER_STREAM: {"gateway"},
        subjects.AUDIO_CHUNKS_STREAM: {"media_node", "transcriber"},
    }
    for stream, expected in owners.items():
        for op in ("CREATE", "UPDATE"):
            subject = subjects.js_stream_api(op, stream)
            assert {r for r, role in ROLES.items() if allows(role.publish_allow(), subject)} == (
                expected
            ), subject
