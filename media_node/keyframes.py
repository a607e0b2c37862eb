"""Keyframe detection and rate-limited keyframe requests toward a publisher.

Sending is synchronous (the node writes the PLI on its own RTCP path, no task per PLI)."""

import asyncio
import time
from collections.abc import Callable

from schemas.logs import get_logger

log = get_logger("media_node.keyframes")


def is_vp8_keyframe(frame: bytes | memoryview) -> bool:
    """True for a VP8 keyframe: bit 0 of the first byte of the frame is 0 (RFC 6386 9.1)."""
    return len(frame) > 0 and (frame[0] & 0x01) == 0


class KeyframeRequester:
    """Sends PLIs to one publisher's primary video SSRC, at most one per ``min_interval_s``.

    A request that arrives inside the interval is not lost: one PLI is scheduled for the end
    of the interval. A request before the primary SSRC is known is sent once it is.
    """

    def __init__(
        self,
        send_pli: Callable[[int], None],
        *,
        min_interval_s: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        log_fields: dict[str, str] | None = None,
    ) -> None:
        self._send_pli = send_pli
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last_sent: float | None = None
        self._pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._primary_ssrc: int | None = None
        self._log_fields = log_fields or {}
        self.sent = 0
        self.requested = 0

    @property
    def primary_ssrc(self) -> int | None:
        return self._primary_ssrc

    def set_primary_ssrc(self, ssrc: int) -> None:
        """The publisher's media SSRC (never its RTX one: browsers ignore PLIs for those)."""
        if ssrc == self._primary_ssrc:
            return
        self._primary_ssrc = ssrc
        if self._pending:
            self._fire()

    def request(self, reason: str) -> None:
        """Ask for a keyframe soon; coalesced and rate-limited."""
        self.requested += 1
        if self._pending:
            return
        self._pending = True
        now = self._clock()
        if self._primary_ssrc is None:
            return  # sent by set_primary_ssrc
        wait = 0.0 if self._last_sent is None else self._last_sent + self.min_interval_s - now
        if wait <= 0:
            self._fire(reason)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._fire, reason)

    def _fire(self, reason: str = "deferred") -> None:
        self._timer = None
        ssrc = self._primary_ssrc
        if not self._pending or ssrc is None:
            return
        self._pending = False
        self._last_sent = self._clock()
        self.sent += 1
        log.debug("keyframe.requested", reason=reason, ssrc=ssrc, **self._log_fields)
        try:
            self._send_pli(ssrc)
        except Exception as exc:  # a closed transport must not break forwarding
            log.debug("keyframe.send_failed", error=type(exc).__name__, **self._log_fields)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending = False
