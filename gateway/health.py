"""Liveness and readiness of one gateway, as the HTTP probes report them."""

from dataclasses import dataclass

from schemas.bus import Bus


@dataclass
class Readiness:
    """Ready = connected to NATS, streams provisioned, and not draining."""

    bus: Bus | None = None
    provisioned: bool = False
    draining: bool = False

    def reasons_not_ready(self) -> list[str]:
        reasons = []
        if self.bus is None or not self.bus.is_connected:
            reasons.append("nats_disconnected")
        if not self.provisioned:
            reasons.append("streams_not_provisioned")
        if self.draining:
            reasons.append("draining")
        return reasons
