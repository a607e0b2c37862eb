"""compose.yaml cannot run here (no container engine), so check it statically: every
command is a real entry point and every variable is one its service's settings read."""

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from gateway.settings import GatewaySettings
from media_node.settings import MediaNodeSettings
from schemas.settings import Settings
from transcriber.settings import TranscriberSettings
from translator_bridge.settings import TranslatorBridgeSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: dict[str, type[Settings]] = {
    "gateway": GatewaySettings,
    "media_node": MediaNodeSettings,
    "transcriber": TranscriberSettings,
    "translator_bridge": TranslatorBridgeSettings,
}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def our_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("image", "").startswith("meeshy-calls")
    }


def test_every_service_kind_is_deployed() -> None:
    modules = {svc["command"][2] for svc in our_services().values()}
    assert modules == set(SETTINGS)


def test_commands_are_real_entry_points() -> None:
    for name, svc in our_services().items():
        command = svc["command"]
        assert command[:2] == ["python", "-m"], name
        assert importlib.util.find_spec(f"{command[2]}.__main__") is not None, name
        assert svc["build"] == "." and (ROOT / "Dockerfile").exists()


def test_every_variable_is_read_by_the_settings() -> None:
    for name, svc in our_services().items():
        known = set(SETTINGS[svc["command"][2]].env_vars())
        unknown = set(svc["environment"]) - known
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"


def test_nats_is_a_three_node_jetstream_cluster_with_replicated_streams() -> None:
    nodes = [s for n, s in compose()["services"].items() if n.startswith("nats-")]
    assert len(nodes) == 3
    assert all("--jetstream" in node["command"] for node in nodes)
    for svc in our_services().values():
        assert svc["environment"]["NATS_STREAM_REPLICAS"] == "3"
        assert svc["environment"]["NATS_URL"].count("nats://") == 3


def test_no_secret_is_written_in_the_file() -> None:
    for svc in our_services().values():
        assert svc["environment"]["NATS_PASSWORD"].startswith("${")
