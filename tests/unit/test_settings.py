import pytest

from gateway.settings import GatewaySettings
from schemas.errors import SettingsError
from schemas.settings import BusSettings, redact_url
from transcriber.settings import TranscriberSettings


def test_defaults_and_environment_values() -> None:
    s = GatewaySettings.from_env({"GATEWAY_PORT": "9001", "NATS_STREAM_REPLICAS": "3"})
    assert s.gateway_port == 9001 and s.nats_stream_replicas == 3
    assert GatewaySettings.from_env({}).nats_url == "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GATEWAY_PORT", "eighty"),
        ("GATEWAY_PORT", "70000"),
        ("HEARTBEAT_INTERVAL_S", "-1"),
        ("LOG_LEVEL", "chatty"),
        ("SERVICE_ID", "has.dot"),
    ],
)
def test_bad_value_names_the_variable_not_the_value(var: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env({var: value})
    assert var in str(info.value)
    assert value not in str(info.value)


def test_secrets_are_never_printed() -> None:
    s = TranscriberSettings.from_env(
        {"NATS_PASSWORD": "hunter2", "NATS_URL": "nats://svc:topsecret@nats:4222"}
    )
    assert s.nats_password == "hunter2"
    for text in (repr(s), str(s), str(s.redacted())):
        assert "hunter2" not in text and "topsecret" not in text
    assert redact_url("nats://a:b@h:1,nats://h2") == "nats://***@h:1,nats://h2"


def test_urls_lose_their_whole_userinfo() -> None:
    """Token-only URLs, and passwords holding an ``@``, a ``/`` or a comma."""
    cases = {
        "nats://s3cr3t-token@nats:4222": "nats://***@nats:4222",
        "nats://svc:p@ss@nats:4222": "nats://***@nats:4222",
        "nats://svc:a/b,c@n1:4222,nats://tok@n2:4222": "nats://***@n1:4222,nats://***@n2:4222",
        "mongodb://u:p%40w@h1,h2/db?replicaSet=rs": "mongodb://***@h1,h2/db?replicaSet=rs",
        "s3cr3t@nats:4222": "***@nats:4222",
        "nats://127.0.0.1:4222": "nats://127.0.0.1:4222",
    }
    for url, shown in cases.items():
        assert redact_url(url) == shown, url
        for secret in ("s3cr3t", "p@ss", "a/b", "tok@", "p%40w"):
            assert secret not in redact_url(url)


def test_a_token_url_never_becomes_the_user_name() -> None:
    assert BusSettings(nats_url="nats://s3cr3t@nats:4222").effective_user() is None
    assert BusSettings(nats_url="nats://svc:pw@nats:4222").effective_user() == "svc"
    assert BusSettings(nats_url="nats://h:1", nats_user="gw").effective_user() == "gw"


def test_env_vars_lists_what_is_read() -> None:
    assert {"NATS_URL", "GATEWAY_PORT", "SERVICE_ID"} <= set(GatewaySettings.env_vars())
