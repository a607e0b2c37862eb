"""Gateway settings, read once from the environment (variable = field name upper-cased)."""

from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, ClassVar, Self

import msgspec

from gateway.keys import MIN_HMAC_SECRET_BYTES, derive_guest_secret, load_rsa_public_key
from schemas.errors import SettingsError
from schemas.secret_policy import weakness
from schemas.settings import Port, PositiveFloat, ServiceSettings

NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
#: Only these two: ``none``, other HMAC sizes and other key types are never accepted.
JwtAlgorithms = Annotated[
    str, msgspec.Meta(pattern=r"^\s*(HS256|RS256)\s*(,\s*(HS256|RS256)\s*)?$")
]


class GatewaySettings(ServiceSettings, frozen=True, kw_only=True):
    """``GATEWAY_HOST``/``GATEWAY_PORT``: where browsers and probes reach this gateway."""

    secret_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "nats_password",
            "nats_token",
            "jwt_secret",
            "guest_token_secret",
            "operator_token",
            "turn_secret",
            "mongo_url",
            "socketio_admin_password",
        }
    )

    gateway_host: str = "127.0.0.1"
    gateway_port: Port = 8000
    #: Seconds a request in hand may still run once draining has begun.
    gateway_graceful_timeout_s: float = 10.0
    #: Comma-separated origins (``https://app.example.com``) whose pages may open Socket.IO
    #: here and read the REST API's answers. Empty (the default): only pages served by this
    #: gateway itself (same origin). ``*`` allows any site, never in production mode.
    cors_origins: str = ""
    #: Comma-separated addresses or networks (``10.0.0.5``, ``10.0.0.0/24``) of reverse
    #: proxies whose ``X-Forwarded-For`` is believed: the client is the last address in it
    #: that is not one of them. Empty: the peer address is the client, the header ignored.
    trusted_proxies: str = ""
    #: Folder of the built web client served at ``/`` (empty: ``web/dist`` of this checkout).
    web_client_dir: str = ""

    # --- identity ------------------------------------------------------------------------
    #: Shared secret of HS256 user tokens (the messenger's), also signs dev tokens.
    jwt_secret: str = ""
    #: PEM public key of RS256 user tokens (``\n`` escapes allowed).
    jwt_public_key: str = ""
    #: Accepted algorithms of user tokens: ``HS256``, ``RS256`` or ``HS256,RS256``.
    jwt_algorithms: JwtAlgorithms = "HS256"
    jwt_issuer: str = "meeshy"
    jwt_audience: str = "meeshy-calls"
    #: Lifetime of development tokens.
    dev_token_ttl_s: PositiveFloat = 12 * 3600.0
    #: Enables ``POST /api/dev/token`` (log in as a named user). Never in production.
    dev_tokens_enabled: bool = False
    #: Bearer token of the operator endpoints (``/api/admin/...``); empty disables them.
    operator_token: str = ""
    #: JSON file (or inline JSON list) of conversations created at start if absent.
    seed_conversations: str = ""

    # --- guests --------------------------------------------------------------------------
    #: Signs share links and guest tokens (gateway-owned); defaults to a key derived from
    #: ``jwt_secret`` (never ``jwt_secret`` itself).
    guest_token_secret: str = ""
    guest_token_ttl_s: PositiveFloat = 6 * 3600.0
    share_link_default_ttl_s: PositiveFloat = 24 * 3600.0
    share_link_max_ttl_s: PositiveFloat = 30 * 24 * 3600.0
    #: Base of the links handed out (``<base>?link=<token>``).
    public_base_url: str = "http://127.0.0.1:8000"

    # --- call timers (design document defaults) --------------------------------------------
    call_ring_timeout_s: PositiveFloat = 30.0
    #: How often clients are asked to send ``call:heartbeat``.
    call_heartbeat_interval_s: PositiveFloat = 5.0
    #: No heartbeat for this long: the participant leaves (``heartbeat_timeout``).
    call_heartbeat_timeout_s: PositiveFloat = 30.0
    #: A lost socket may resume its place for this long (``connection_lost`` after).
    call_reconnect_grace_s: PositiveFloat = 15.0
    call_max_duration_s: PositiveFloat = 4 * 3600.0
    #: Period of the deadline sweeper that runs on every gateway.
    call_sweep_interval_s: PositiveFloat = 0.25
    #: An event its writer did not confirm published is published by a sweeper after this.
    call_outbox_grace_s: PositiveFloat = 2.0
    #: Ended calls stay readable (GET /api/calls/{id}) this long, then are removed.
    call_ended_retention_s: PositiveFloat = 3600.0
    call_max_participants: Annotated[int, msgspec.Meta(ge=2, le=50)] = 50

    # --- media nodes (SFU) ---------------------------------------------------------------
    #: A media session closes itself on its node unless renewed within this long (the
    #: gateway renews every third of it); a dead gateway's sessions are gone after it.
    media_lease_s: Annotated[float, msgspec.Meta(ge=1.0, le=3600.0)] = 20.0
    #: How long a request to a media node (open a session, an SDP exchange) may take.
    media_rpc_timeout_s: PositiveFloat = 10.0
    #: Slots of each participant's downlink (empty: the media node's defaults).
    media_video_slots: Annotated[int, msgspec.Meta(ge=0, le=16)] | None = None
    media_audio_slots: Annotated[int, msgspec.Meta(ge=0, le=8)] | None = None

    # --- captions ------------------------------------------------------------------------
    #: How long ``call:captions-uplink`` waits for placement and the media node before it
    #: answers ``unavailable`` (the session still follows, as ``call:captions-uplink``).
    captions_uplink_timeout_s: PositiveFloat = 10.0

    # --- ICE -----------------------------------------------------------------------------
    #: Comma-separated STUN URLs. Empty by default: no third party learns who calls whom;
    #: production points this (and TURN) at its own coturn.
    stun_urls: str = ""
    #: Comma-separated TURN URLs (``turn:host:3478?transport=udp``); empty: STUN only.
    turn_urls: str = ""
    #: coturn ``static-auth-secret`` (REST API shared secret).
    turn_secret: str = ""
    #: Lifetime of TURN credentials (never past the caller's own token). Clients ask again
    #: with ``call:request-ice-servers`` before ``expiresAt``; a relay allocated with them
    #: lives until then, so keep it above the ICE-restart time of a long call's refresh.
    turn_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=24 * 3600.0)] = 600.0

    # --- history (gateway/routes/history.py) and operators ---------------------------------
    #: The archive's MongoDB, read by ``/api/calls/history`` and transcripts; empty: those
    #: endpoints answer 503.
    mongo_url: str = ""
    mongo_database: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,63}$")] = "meeshy_calls"
    #: Every MongoDB wait of a history request gives up after this long (503, try again).
    mongo_timeout_s: PositiveFloat = 5.0
    #: python-socketio's admin UI instrumentation (namespace ``/admin``), behind a login.
    socketio_admin_enabled: bool = False
    socketio_admin_user: str = "admin"
    #: Required (12 bytes or more) when the admin UI is enabled.
    socketio_admin_password: str = ""

    # --- limits --------------------------------------------------------------------------
    #: Largest REST request body (larger: 413 ``too_large``, before any of it is parsed).
    max_request_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    #: Sockets one person (user or guest) may hold at once on this gateway.
    max_sockets_per_principal: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    #: Socket connections per client address and per person: sustained rate and burst.
    rate_connect_per_s: PositiveFloat = 2.0
    rate_connect_burst: NonNegativeInt = 20
    #: How often live sockets are re-checked: an expired token (or a guest whose share link
    #: was revoked) is told why and disconnected.
    socket_auth_check_interval_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    #: Largest SDP accepted in ``call:signal``.
    max_sdp_bytes: Annotated[int, msgspec.Meta(ge=256)] = 32 * 1024
    max_candidate_bytes: Annotated[int, msgspec.Meta(ge=64)] = 1024
    #: Per user, per event family: sustained rate (per second) and burst.
    rate_initiate_per_s: PositiveFloat = 0.5
    rate_initiate_burst: NonNegativeInt = 5
    rate_signal_per_s: PositiveFloat = 50.0
    rate_signal_burst: NonNegativeInt = 200
    rate_heartbeat_per_s: PositiveFloat = 2.0
    rate_heartbeat_burst: NonNegativeInt = 10
    #: ``call:transcription`` (a browser's interim results come several per second).
    rate_transcript_per_s: PositiveFloat = 8.0
    rate_transcript_burst: NonNegativeInt = 30
    rate_default_per_s: PositiveFloat = 10.0
    rate_default_burst: NonNegativeInt = 40

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        settings = super().from_env(environ)
        settings.check_identity()
        settings.check_admin_ui()
        settings.check_network()
        return settings

    def check_network(self) -> None:
        try:
            self.proxy_networks()
        except ValueError:
            raise SettingsError(
                "environment variable TRUSTED_PROXIES: must be comma-separated IP addresses "
                "or networks (10.0.0.5, 10.0.0.0/24)"
            ) from None

    def proxy_networks(self) -> list[IPv4Network | IPv6Network]:
        """The trusted proxies, as networks (``ValueError`` for a bad entry)."""
        return [
            ip_network(entry.strip(), strict=False)
            for entry in self.trusted_proxies.split(",")
            if entry.strip()
        ]

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if "HS256" in self.algorithms():
            why = weakness(self.jwt_secret, MIN_HMAC_SECRET_BYTES)
            if why:
                problems.append(f"JWT_SECRET {why}")
        why = weakness(self.guest_token_secret, MIN_HMAC_SECRET_BYTES)
        if why:
            problems.append(f"GUEST_TOKEN_SECRET {why} (guests must not share the users' key)")
        elif self.guest_token_secret == self.jwt_secret:
            problems.append("GUEST_TOKEN_SECRET must differ from JWT_SECRET")
        if self.operator_token:
            why = weakness(self.operator_token)
            if why:
                problems.append(f"OPERATOR_TOKEN {why}")
        if self.turn_urls:
            why = weakness(self.turn_secret)
            if why:
                problems.append(f"TURN_SECRET {why} (TURN_URLS is set)")
        if self.socketio_admin_enabled:
            why = weakness(self.socketio_admin_password)
            if why:
                problems.append(f"SOCKETIO_ADMIN_PASSWORD {why}")
        if self.dev_tokens_enabled:
            problems.append("DEV_TOKENS_ENABLED must be false (anyone could log in as anyone)")
        if self.origins() == "*":
            problems.append("CORS_ORIGINS must name the origins, not *")
        return problems

    def check_identity(self) -> None:
        """Refuse key material that would weaken token checks (``SettingsError``, exit 2)."""
        for name in ("jwt_secret", "guest_token_secret"):
            value: str = getattr(self, name)
            if value and len(value.encode()) < MIN_HMAC_SECRET_BYTES:
                raise SettingsError(
                    f"environment variable {name.upper()}: must be at least "
                    f"{MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 section 3.2)"
                )
        if "RS256" in self.algorithms():
            try:
                load_rsa_public_key(self.jwt_public_key)
            except ValueError as exc:
                raise SettingsError(
                    f"environment variable JWT_PUBLIC_KEY: {exc} (JWT_ALGORITHMS has RS256)"
                ) from None

    def check_admin_ui(self) -> None:
        if self.socketio_admin_enabled and len(self.socketio_admin_password.encode()) < 12:
            raise SettingsError(
                "environment variable SOCKETIO_ADMIN_PASSWORD: must be at least 12 bytes "
                "when SOCKETIO_ADMIN_ENABLED is true"
            )

    def algorithms(self) -> list[str]:
        return sorted({a.strip() for a in self.jwt_algorithms.split(",") if a.strip()})

    def guest_secret(self) -> str:
        return self.guest_token_secret or derive_guest_secret(self.jwt_secret)

    def origins(self) -> str | list[str]:
        """The allowed cross-origin sites: ``*``, or a list (empty: same origin only)."""
        if self.cors_origins.strip() == "*":
            return "*"
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]
