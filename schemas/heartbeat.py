"""Service heartbeats on ``svc.heartbeat.<kind>.<service_id>``.

Every service instance announces itself when it starts, then every few seconds, then when
it starts draining and when it stops. Operators and supervisors read these to know what is
running and how loaded it is; a missing heartbeat means a dead instance.
"""

from datetime import datetime
from typing import Literal

import msgspec

from schemas.ids import Id
from schemas.message import Message, utc_now

ServiceKind = Literal[
    "gateway", "media_node", "transcriber", "translator_bridge", "selector", "archive"
]
ServiceState = Literal["starting", "ready", "draining", "stopped"]


class ServiceLoad(msgspec.Struct, frozen=True, kw_only=True):
    """How busy one instance is. ``extra`` holds kind-specific gauges (e.g. sockets)."""

    in_flight: int = 0
    handled_total: int = 0
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    extra: dict[str, float] = msgspec.field(default_factory=dict)


class ServiceHeartbeat(Message, frozen=True, kw_only=True, tag="service.heartbeat"):
    """One instance's liveness, state and load."""

    service_id: Id
    kind: ServiceKind
    version: str
    state: ServiceState
    started_at: datetime
    sent_at: datetime = msgspec.field(default_factory=utc_now)
    interval_s: float = 5.0
    load: ServiceLoad = msgspec.field(default_factory=ServiceLoad)
