"""The packet path on one ICE/DTLS transport: SRTP in the datagram callback, SRTP out.

aiortc delivers each datagram through aioice's per-connection ``asyncio.Queue`` to a task
in its DTLS transport, then through its RTP router to a receiver task; every send goes
through ``await``-ed coroutines. At tens of thousands of packets per second that queue,
those task wake-ups and coroutine frames cost more than the forwarding itself (see
``/shared/notes/sfu-slots.md``). :class:`PacketTransport` takes media off that path:

- **in**: every local candidate's ``StunProtocol.datagram_received`` is wrapped; an SRTP
  or SRTCP datagram (first byte 128-191) is decrypted right there with the transport's
  SRTP session and handed to ``on_rtp`` / ``on_rtcp`` synchronously; anything else (STUN
  consent checks, DTLS) goes to aioice as before. What aiortc still decrypts itself
  (datagrams queued before the hook) reaches the same handlers through the DTLS
  transport's ``_handle_rtp_data`` / ``_handle_rtcp_data`` (the slow path).
- **out**: :meth:`send_rtp` / :meth:`send_rtcp` protect and ``sendto`` on the selected
  candidate pair's datagram transport, synchronously. A socket whose write buffer is above
  ``max_write_buffer`` drops the packet (counted) instead of queueing without bound.

Handlers must not raise: an exception is caught, counted and logged (rate-limited), and
the next datagram is handled as usual.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pylibsrtp

from media_node import aiortc_hooks
from schemas.logs import get_logger

log = get_logger("media_node.transport")

RtpHandler = Callable[[bytes, float], None]
RtcpHandler = Callable[[bytes], None]


#: The shortest datagram that can be SRTP or SRTCP (an RTCP header and its SSRC).
_MIN_SRTP = 8


@dataclass(slots=True)
class TransportStats:
    """Counters shared by every transport of a node (read by the heartbeat)."""

    rtp_in: int = 0
    rtcp_in: int = 0
    rtp_out: int = 0
    rtcp_out: int = 0
    bytes_out: int = 0
    send_dropped: int = 0
    unprotect_failed: int = 0
    handler_errors: int = 0


class PacketTransport:
    """The node's own RTP/RTCP path over one aiortc ``RTCDtlsTransport`` (see module doc)."""

    def __init__(
        self,
        dtls: Any,
        *,
        on_rtp: RtpHandler,
        on_rtcp: RtcpHandler,
        stats: TransportStats,
        max_write_buffer: int = 256 * 1024,
        log_fields: dict[str, str] | None = None,
    ) -> None:
        self.dtls = dtls
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._stats = stats
        self._max_write_buffer = max_write_buffer
        self._log_fields = log_fields or {}
        self._connection = aiortc_hooks.ice_connection(dtls)
        self._nominated = aiortc_hooks.nominated_pairs(self._connection)
        self._pair: Any = None
        self._sock: Any = None
        self._addr: tuple[Any, ...] = ()
        self._tx: Any = None
        self._rx: Any = None
        self._closed = False
        self._last_error_log = 0.0
        aiortc_hooks.hook_plain_rtp(dtls, self._slow_rtp, self._slow_rtcp)
        self.hook_protocols()

    def hook_protocols(self) -> int:
        """Wrap the datagram callback of every local candidate (idempotent)."""
        hooked = 0
        for protocol in aiortc_hooks.local_protocols(self._connection):
            hooked += aiortc_hooks.hook_datagrams(protocol, self._wrap)
        return hooked

    @property
    def connected(self) -> bool:
        return not self._closed and self.dtls.state == "connected"

    def close(self) -> None:
        """Stop sending; later datagrams are ignored."""
        self._closed = True
        self._pair = None
        self._sock = None

    # --- in ---------------------------------------------------------------------------
    def _wrap(self, original: aiortc_hooks.DatagramHandler) -> aiortc_hooks.DatagramHandler:
        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            first = data[0] if data else 0
            if 127 < first < 192:
                if len(data) < _MIN_SRTP:
                    self._stats.unprotect_failed += 1  # too short to be RTP or RTCP
                    return
                rx = self._rx
                if rx is None:
                    rx = self._rx = aiortc_hooks.srtp_sessions(self.dtls)[0]
                    if rx is None:
                        original(data, addr)  # before the DTLS handshake finished
                        return
                if self._closed:
                    return
                self._receive(rx, data)
                return
            original(data, addr)

        return datagram_received

    def _receive(self, rx: Any, data: bytes) -> None:
        if 192 <= data[1] <= 223:
            try:
                plain = rx.unprotect_rtcp(data)
            except pylibsrtp.Error:
                self._stats.unprotect_failed += 1
                return
            self._stats.rtcp_in += 1
            self._dispatch_rtcp(plain)
            return
        try:
            plain = rx.unprotect(data)
        except pylibsrtp.Error:
            self._stats.unprotect_failed += 1
            return
        self._stats.rtp_in += 1
        self._dispatch_rtp(plain)

    def _dispatch_rtp(self, plain: bytes) -> None:
        try:
            self._on_rtp(plain, time.monotonic())
        except Exception as exc:
            self._handler_failed("rtp", exc)

    def _dispatch_rtcp(self, plain: bytes) -> None:
        try:
            self._on_rtcp(plain)
        except Exception as exc:
            self._handler_failed("rtcp", exc)

    def _slow_rtp(self, plain: bytes) -> None:
        if not self._closed:
            self._stats.rtp_in += 1
            self._dispatch_rtp(plain)

    async def _slow_rtcp(self, plain: bytes) -> None:
        if not self._closed:
            self._stats.rtcp_in += 1
            self._dispatch_rtcp(plain)

    def _handler_failed(self, what: str, exc: Exception) -> None:
        self._stats.handler_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 5.0:
            self._last_error_log = now
            log.exception(
                "transport.handler_failed",
                packet=what,
                error=type(exc).__name__,
                **self._log_fields,
            )

    # --- out --------------------------------------------------------------------------
    def _route(self) -> bool:
        pair = self._nominated.get(1)
        if pair is None:
            self._pair = None
            return False
        if pair is not self._pair:
            self._pair = pair
            self._sock = pair.protocol.transport
            self._addr = pair.remote_addr
        if self._tx is None:
            # Asked to send before the DTLS keys existed: look again each time, or a leg
            # asked too early (a keyframe request right after a re-publish) never sends.
            self._tx = aiortc_hooks.srtp_sessions(self.dtls)[1]
        return self._tx is not None

    def send_rtp(self, plain: bytes) -> bool:
        """Protect and send one RTP packet now; False if it was dropped."""
        if self._closed:
            return False
        if (self._nominated.get(1) is not self._pair or self._tx is None) and not self._route():
            return False
        sock = self._sock
        if sock.get_write_buffer_size() > self._max_write_buffer:
            self._stats.send_dropped += 1
            return False
        data = self._tx.protect(plain)
        try:
            sock.sendto(data, self._addr)
        except (OSError, RuntimeError):  # the socket closed under us
            self._stats.send_dropped += 1
            return False
        stats = self._stats
        stats.rtp_out += 1
        stats.bytes_out += len(data)
        return True

    def send_rtcp(self, plain: bytes) -> bool:
        """Protect and send one (compound) RTCP packet now; False if it was dropped."""
        if self._closed:
            return False
        if (self._nominated.get(1) is not self._pair or self._tx is None) and not self._route():
            return False
        try:
            data = self._tx.protect_rtcp(plain)
        except pylibsrtp.Error:
            return False
        try:
            self._sock.sendto(data, self._addr)
        except (OSError, RuntimeError):
            return False
        self._stats.rtcp_out += 1
        return True
