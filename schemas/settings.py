"""Typed settings read once from environment variables.

Each service has one settings Struct; a field ``nats_url`` is read from ``NATS_URL``. A bad
value raises :class:`schemas.errors.SettingsError` naming the variable and what was expected,
never the value itself (it may be a secret).
"""

import os
import re
import socket
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

import msgspec

from schemas.errors import SettingsError
from schemas.ids import ID_PATTERN, new_id
from schemas.secret_policy import weakness

LogLevel = Literal["debug", "info", "warning", "error"]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]

_FIELD_RE = re.compile(r"\s*-\s*at\s*`\$\.([a-z0-9_]+)`")
_QUOTED_RE = re.compile(r"\s*'[^']*'")


def default_service_id(kind: str) -> str:
    """``<kind>-<host>-<random>``: unique per process, readable in heartbeats."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{kind.replace('_', '-')}-{host}-{new_id()[:6]}"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every settings object: :meth:`from_env`, redacted ``repr``."""

    #: Fields whose values are never printed.
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def env_vars(cls) -> tuple[str, ...]:
        """Every environment variable this settings object reads."""
        return tuple(name.upper() for name in cls.__struct_fields__)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for name in cls.__struct_fields__:
            value = env.get(name.upper())
            if value is not None and value != "":
                raw[name] = value
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            reason = str(exc)
            match = _FIELD_RE.search(reason)
            var = match.group(1).upper() if match else "?"
            # msgspec may quote the bad value (enums); values can be secrets, so drop it.
            reason = _QUOTED_RE.sub("", _FIELD_RE.sub("", reason))
            raise SettingsError(f"environment variable {var}: {reason}") from None

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict, secrets replaced by ``***`` (safe to log)."""
        out: dict[str, Any] = {}
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in self.secret_fields and value:
                value = "***"
            elif name == "nats_url" and isinstance(value, str):
                value = redact_url(value)
            out[name] = value
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"{type(self).__name__}({fields})"

    __str__ = __repr__


def _url_password(urls: str) -> str | None:
    for raw in urls.split(","):
        server = raw.strip()
        password = urlsplit(server if "//" in server else f"nats://{server}").password
        if password:
            return password
    return None


def redact_url(url: str) -> str:
    """Hide the credentials of every URL in ``url`` (one, or a comma-separated list): the
    whole userinfo, ``nats://user:pw@host`` -> ``nats://***@host``.

    The user goes too: in ``nats://<token>@host`` the only part before ``@`` is a secret.
    What runs to the *last* ``@`` before the next URL is hidden, so a password holding an
    ``@``, a ``/`` or a comma does not show through either (hiding too much is safe).
    """
    parts = url.split("//")
    for i, part in enumerate(parts):
        if i == 0 and len(parts) > 1:
            continue  # the first scheme ("nats:")
        at = part.rfind("@")
        if at >= 0:
            parts[i] = "***" + part[at:]
    return "//".join(parts)


ServiceId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]


class BusSettings(Settings, frozen=True, kw_only=True):
    """How a service reaches NATS, and the JetStream resources it provisions."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"nats_password", "nats_token"})

    #: Comma-separated server URLs, e.g. ``nats://n1:4222,nats://n2:4222``.
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    #: Give up (exit non-zero) if no server answers within this many seconds at start.
    nats_connect_deadline_s: PositiveFloat = 30.0
    #: Replicas of streams and KV buckets (3 on a three-node cluster).
    nats_stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    #: How long call events are kept in ``CALL_EVENTS``.
    call_events_max_age_s: PositiveFloat = 7 * 24 * 3600.0
    call_events_max_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024)] = 1024 * 1024 * 1024
    dead_letters_max_age_s: PositiveFloat = 14 * 24 * 3600.0
    #: How long transcript segments and captions are kept in ``TRANSCRIPTS`` (the archive
    #: copies the final ones into MongoDB).
    transcripts_max_age_s: PositiveFloat = 7 * 24 * 3600.0
    transcripts_max_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024)] = 1024 * 1024 * 1024

    def servers(self) -> list[str]:
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]

    def effective_user(self) -> str | None:
        """The NATS user this connects as: ``NATS_USER``, else one named in ``NATS_URL``."""
        if self.nats_user:
            return self.nats_user
        for server in self.servers():
            parsed = urlsplit(server if "//" in server else f"nats://{server}")
            # ``user:password@``: a user. A lone ``token@`` is a token, never a user name
            # (it would end up in inbox subjects and logs).
            if parsed.username and parsed.password is not None:
                return parsed.username
        return None


class ServiceSettings(BusSettings, frozen=True, kw_only=True):
    """What every service reads, on top of the bus settings."""

    #: Refuse to start with weak, missing or default secrets (``schemas.secret_policy``):
    #: every deployment but the embedded stack and the tests sets it (compose.yaml does).
    production_mode: bool = False

    #: This instance's id; defaults to ``<kind>-<host>-<random>``.
    service_id: ServiceId | None = None
    log_level: LogLevel = "info"
    heartbeat_interval_s: PositiveFloat = 5.0
    #: On SIGTERM, how long to let work in hand finish before exiting anyway.
    drain_timeout_s: PositiveFloat = 20.0

    # --- observability (schemas/metrics.py, schemas/telemetry.py) -------------------------
    #: Serve ``/metrics`` for Prometheus on this port (unset: no endpoint; 0: any free port,
    #: logged in ``service.metrics_listening``).
    metrics_port: Port | None = None
    metrics_host: str = "127.0.0.1"
    #: Where spans go: ``none``, ``console`` (stderr), ``otlp`` (HTTP) or ``file``.
    otel_traces_exporter: Literal["none", "console", "otlp", "file"] = "none"
    #: OTLP/HTTP collector, e.g. ``http://otel-collector:4318``.
    otel_exporter_otlp_endpoint: str = ""
    #: JSON lines file of spans (``OTEL_TRACES_EXPORTER=file``).
    otel_traces_file: str = ""
    #: Share of new traces recorded (a trace started upstream keeps its decision).
    otel_traces_sampler_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        settings = super().from_env(environ)
        if settings.production_mode:
            problems = settings.production_problems()
            if problems:
                raise SettingsError("PRODUCTION_MODE refuses to start: " + "; ".join(problems))
        return settings

    def production_problems(self) -> list[str]:
        """What production mode refuses in these settings: ``VARIABLE: rule`` each, never
        a value. Services with secrets of their own extend it."""
        problems: list[str] = []
        if self.nats_token:
            why = weakness(self.nats_token)
            if why:
                problems.append(f"NATS_TOKEN {why}")
        else:
            if not self.effective_user():
                problems.append("NATS_USER is not set (each service has its own NATS user)")
            password = self.nats_password or _url_password(self.nats_url)
            why = weakness(password)
            if why:
                problems.append(f"NATS_PASSWORD {why}")
        return problems
