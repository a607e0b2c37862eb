"""compose.yaml cannot run here (no container engine), so check it statically: every
command is a real entry point, every variable is one its service's settings read, no host
port is used twice, every service is scraped, and the dashboard's queries name metrics the
services export."""

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import yaml

from gateway.archive.settings import ArchiveSettings
from gateway.selector.settings import SelectorSettings
from gateway.settings import GatewaySettings
from media_node.settings import MediaNodeSettings
from schemas import metrics
from schemas.settings import ServiceSettings, Settings
from transcriber.settings import TranscriberSettings
from translator_bridge.settings import TranslatorBridgeSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SETTINGS: dict[str, type[Settings]] = {
    "gateway": GatewaySettings,
    "gateway.archive": ArchiveSettings,
    "gateway.selector": SelectorSettings,
    "media_node": MediaNodeSettings,
    "transcriber": TranscriberSettings,
    "translator_bridge": TranslatorBridgeSettings,
}
#: Entry points other branches are adding; until they land only the common variables
#: (ServiceSettings) may be set for them. A test below fails once one exists, so the entry
#: is removed here and the service's own settings are checked.
PENDING: dict[str, str] = {}
#: Where each kind's heartbeat load figures (exported as meeshy_<kind>_<name>) are set.
LOAD_SOURCES = {
    "gateway": ROOT / "gateway" / "service.py",
    "media_node": ROOT / "media_node" / "service.py",
    "archive": ROOT / "gateway" / "archive" / "service.py",
}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def our_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in services().items()
        if str(svc.get("image", "")).startswith("meeshy-calls")
    }


def module_of(svc: dict[str, Any]) -> str:
    return str(svc["command"][2])


def settings_of(svc: dict[str, Any]) -> type[Settings]:
    return SETTINGS.get(module_of(svc), ServiceSettings)


def test_commands_are_real_entry_points() -> None:
    for name, svc in our_services().items():
        command = svc["command"]
        assert command[:2] == ["python", "-m"] and len(command) == 3, name
        module = module_of(svc)
        if module in PENDING:
            continue
        assert importlib.util.find_spec(f"{module}.__main__") is not None, name
        assert svc["build"] == "." and (ROOT / "Dockerfile").exists()


def test_pending_entry_points_are_still_pending() -> None:
    for module in PENDING:
        try:
            found = importlib.util.find_spec(f"{module}.__main__")
        except ModuleNotFoundError:
            found = None
        assert found is None, f"{module} exists now: remove it from PENDING, add its settings"


def test_every_service_kind_is_deployed() -> None:
    assert {module_of(s) for s in our_services().values()} == set(SETTINGS) | set(PENDING)


def test_the_deployment_has_every_part_of_the_issue() -> None:
    svc = services()
    ours = our_services()

    def count(module: str) -> int:
        return sum(module_of(s) == module for s in ours.values())

    assert count("gateway") == 2 and count("media_node") == 2 and count("transcriber") == 2
    assert count("translator_bridge") == 1 and count("gateway.archive") == 1
    assert count("gateway.selector") == 1
    for part in ("coturn", "proxy", "apertium", "prometheus", "grafana", "otel-collector"):
        assert part in svc, part
    mongos = [n for n, s in svc.items() if str(s.get("image", "")).startswith("mongo:")]
    members = [n for n in mongos if "--replSet" in svc[n].get("command", [])]
    assert len(members) == 3
    init = (DEPLOY / "mongo" / "init-replica-set.js").read_text()
    assert all(f"{m}:27017" in init for m in members)
    for s in ours.values():
        if "MONGO_URL" in s["environment"]:
            assert "replicaSet=rs0" in s["environment"]["MONGO_URL"]
    for name, s in ours.items():
        if module_of(s) == "media_node":
            assert s["network_mode"] == "host", name
            assert "MEDIA_NODE_PUBLIC_IP" in s["environment"], name


def test_every_variable_is_read_by_the_settings() -> None:
    for name, svc in our_services().items():
        known = set(settings_of(svc).env_vars())
        unknown = set(svc["environment"]) - known
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"


def test_nats_is_a_three_node_jetstream_cluster_with_replicated_streams() -> None:
    nodes = [s for n, s in services().items() if n.startswith("nats-")]
    assert len(nodes) == 3
    assert all("--jetstream" in node["command"] for node in nodes)
    for svc in our_services().values():
        assert svc["environment"]["NATS_STREAM_REPLICAS"] == "3"
        assert svc["environment"]["NATS_URL"].count("nats://") == 3


def test_no_secret_is_written_in_the_file() -> None:
    for name, svc in our_services().items():
        secrets = settings_of(svc).secret_fields
        for var, value in svc["environment"].items():
            if var.lower() in secrets and var != "MONGO_URL":
                assert str(value).startswith("${"), f"{name}: {var} must come from .env"
    grafana = services()["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana.startswith("${")


def _host_ports(entry: str) -> set[int]:
    """Host ports of a compose ``ports`` entry: ``[ip:]host[-host]:container[/proto]``."""
    parts = entry.split("/", maxsplit=1)[0].split(":")
    host = parts[-2] if len(parts) >= 2 else parts[-1]
    low, _, high = host.partition("-")
    return set(range(int(low), int(high or low) + 1))


def test_no_host_port_is_used_twice() -> None:
    used: dict[int, str] = {}

    def claim(port: int, owner: str) -> None:
        assert port not in used, f"port {port}: {used[port]} and {owner}"
        used[port] = owner

    for name, svc in services().items():
        for entry in svc.get("ports", []):
            for port in _host_ports(str(entry)):
                claim(port, name)
        if svc.get("network_mode") == "host":
            env = svc.get("environment", {})
            for var in ("METRICS_PORT", "GATEWAY_PORT"):
                if var in env:
                    claim(int(env[var]), f"{name} {var}")
            command = " ".join(str(c) for c in svc.get("command", []))
            for port in re.findall(r"--listening-port=(\d+)", command):
                claim(int(port), name)
            lo, hi = (
                re.findall(r"--min-port=(\d+)", command),
                re.findall(r"--max-port=(\d+)", command),
            )
            if lo and hi:
                for port in range(int(lo[0]), int(hi[0]) + 1):
                    claim(port, f"{name} relays")


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    }
    for name, svc in our_services().items():
        env = svc["environment"]
        port = env["METRICS_PORT"]
        host = "host.docker.internal" if svc.get("network_mode") == "host" else name
        assert f"{host}:{port}" in targets, name
        assert env["METRICS_HOST"] == "0.0.0.0", name


def test_the_proxy_sends_websockets_to_every_gateway() -> None:
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    gateways = [n for n, s in our_services().items() if module_of(s) == "gateway"]
    for name in gateways:
        assert f"server {name}:8000" in conf
    assert "proxy_set_header Upgrade $http_upgrade" in conf and "location /socket.io/" in conf
    mounted = " ".join(services()["proxy"]["volumes"])
    assert "deploy/nginx/nginx.conf" in mounted


def _exported() -> tuple[set[str], set[str]]:
    """Names the services declare, and the prefixes of heartbeat load figures."""
    import gateway.app
    import gateway.archive.writer
    import gateway.sockets.server
    import schemas.bus
    from schemas import runtime

    del gateway.app, gateway.archive.writer, gateway.sockets.server, schemas.bus
    fake = SimpleNamespace(
        kind="gateway",
        service_id="gateway-x",
        in_flight=SimpleNamespace(count=0, total=0),
        settings=SimpleNamespace(metrics_port=None),
        load_extra=dict,
        take_load=dict,
        load_seen={},
    )
    runtime._start_metrics(cast(Any, fake), cast(Any, SimpleNamespace()), cast(Any, fake))
    names = {m.name for m in metrics.REGISTRY.collect()}
    names |= {f"{n}_total" for n in names}  # a counter family is named without it
    return names, {f"meeshy_{kind}_" for kind in LOAD_SOURCES}


def test_the_dashboard_queries_name_exported_metrics() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "meeshy.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "meeshy-calls.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    declared, load_prefixes = _exported()
    used = {name for e in exprs for name in re.findall(r"\bmeeshy_[a-z0-9_]+", e)}
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base in declared or name in declared:
            continue
        prefix = next((p for p in load_prefixes if name.startswith(p)), None)
        assert prefix is not None, f"the dashboard reads {name}, which nothing exports"
        figure = name.removeprefix(prefix)
        kind = prefix.removeprefix("meeshy_").rstrip("_")
        source = LOAD_SOURCES[kind].read_text()
        assert re.search(rf"[\"']{figure}[\"']", source), f"{name}: no load figure {figure}"
    for needed in (
        "meeshy_gateway_active_calls",
        "meeshy_gateway_sockets",
        "meeshy_mode_switch_duration_seconds_bucket",
        "meeshy_transcription_latency_seconds_bucket",
        "meeshy_media_node_tap_dropped",
        "meeshy_media_node_forwarded_streams",
        "meeshy_gateway_http_errors_total",
    ):
        assert needed in used, needed
