"""Settings of the observability and history hooks: clear refusals, secrets never shown."""

import pytest

from gateway.archive.settings import ArchiveSettings
from gateway.settings import GatewaySettings
from schemas.errors import SettingsError
from schemas.settings import ServiceSettings


def test_admin_ui_needs_a_password() -> None:
    with pytest.raises(SettingsError, match="SOCKETIO_ADMIN_PASSWORD"):
        GatewaySettings.from_env({"SOCKETIO_ADMIN_ENABLED": "true"})
    ok = GatewaySettings.from_env(
        {"SOCKETIO_ADMIN_ENABLED": "true", "SOCKETIO_ADMIN_PASSWORD": "correct-horse-battery"}
    )
    assert "correct-horse" not in repr(ok)


def test_mongo_url_is_a_secret_and_observability_is_checked() -> None:
    settings = ArchiveSettings.from_env({"MONGO_URL": "mongodb://u:hunter2@db:27017"})
    assert "hunter2" not in repr(settings)
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER"):
        ServiceSettings.from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(SettingsError, match="METRICS_PORT"):
        ServiceSettings.from_env({"METRICS_PORT": "70000"})
    with pytest.raises(SettingsError, match="ARCHIVE_DURABLE"):
        ArchiveSettings.from_env({"ARCHIVE_DURABLE": "has.dots"})
    assert ServiceSettings.from_env({}).metrics_port is None
