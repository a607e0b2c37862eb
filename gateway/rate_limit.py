"""Per-user token buckets, one per family of client events (initiate, signal, heartbeat...).

Local to one gateway: a user's sockets normally sit on one gateway, and a flood is stopped
where it arrives. Buckets of idle users are dropped so memory stays bounded.
"""

import time
from dataclasses import dataclass

from gateway.errors import CallError
from gateway.settings import GatewaySettings

EVENT_FAMILY: dict[str, str] = {
    "call:initiate": "initiate",
    "rest:start": "initiate",
    "call:signal": "signal",
    "call:heartbeat": "heartbeat",
    "call:transcription": "transcript",
}
_MAX_BUCKETS = 200_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True, slots=True)
class Rate:
    per_s: float
    burst: float


class RateLimiter:
    def __init__(self, settings: GatewaySettings) -> None:
        self._rates = {
            "initiate": Rate(settings.rate_initiate_per_s, settings.rate_initiate_burst),
            "signal": Rate(settings.rate_signal_per_s, settings.rate_signal_burst),
            "heartbeat": Rate(settings.rate_heartbeat_per_s, settings.rate_heartbeat_burst),
            "transcript": Rate(settings.rate_transcript_per_s, settings.rate_transcript_burst),
            "default": Rate(settings.rate_default_per_s, settings.rate_default_burst),
        }
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self.refused = 0

    def check(self, principal_id: str, event: str) -> None:
        """Take one token, or raise ``CallError("rate_limited")``."""
        family = EVENT_FAMILY.get(event, "default")
        rate = self._rates[family]
        now = time.monotonic()
        key = (principal_id, family)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(rate.burst, now)
        bucket.tokens = min(rate.burst, bucket.tokens + (now - bucket.at) * rate.per_s)
        bucket.at = now
        if bucket.tokens < 1:
            self.refused += 1
            raise CallError("rate_limited", f"too many {family} events; slow down")
        bucket.tokens -= 1

    def _prune(self, now: float) -> None:
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.at) * self._rates[k[1]].per_s >= self._rates[k[1]].burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()
