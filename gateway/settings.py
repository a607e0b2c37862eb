"""Gateway settings, read once from the environment."""

from schemas.settings import Port, ServiceSettings


class GatewaySettings(ServiceSettings, frozen=True, kw_only=True):
    """``GATEWAY_HOST``/``GATEWAY_PORT``: where browsers and probes reach this gateway."""

    gateway_host: str = "127.0.0.1"
    gateway_port: Port = 8000
    #: Seconds a request in hand may still run once draining has begun.
    gateway_graceful_timeout_s: float = 10.0
