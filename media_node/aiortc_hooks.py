"""Every place the node reaches into aiortc or aioice beyond their public API, in one module.

The node keeps aiortc for what it does well (SDP, ICE via aioice, DTLS, SRTP keys) and
takes over the RTP path itself (see :mod:`media_node.transport`). That needs a small, fixed
set of internals of **aiortc 1.16 / aioice 0.13** (pinned in ``pyproject.toml``); each is
named here, and :func:`check` (run by the service at start and by
``tests/unit/test_media_aiortc_hooks.py``) fails loudly if an upgrade moved one:

- ``RTCRtpSender.send`` / ``RTCRtpReceiver.receive``: called by the peer connection, by
  attribute, once DTLS is connected, with the negotiated parameters. The node replaces them
  per instance (:func:`stub_sender`, :func:`stub_receiver`): it takes the parameters and
  does **not** start aiortc's RTP/RTCP tasks, encoder, decoder thread or jitter buffer.
  A never-started sender or receiver makes ``stop()`` (and so ``pc.close()``) a no-op.
- ``RTCRtpSender._ssrc`` / ``_rtx_ssrc``: the SSRCs aiortc put in the SDP for a sender.
- ``RTCDtlsTransport._rx_srtp`` / ``_tx_srtp``: the SRTP sessions (``pylibsrtp.Session``)
  once the handshake is done; ``_handle_rtp_data`` / ``_handle_rtcp_data``: where aiortc
  hands decrypted packets to its router (overridden per instance as the slow path).
- ``RTCIceTransport._connection``: the ``aioice.Connection``; its ``_protocols`` (one
  ``StunProtocol`` per local candidate, whose ``datagram_received`` is overridden per
  instance: the fast path) and ``_nominated`` (component -> selected ``CandidatePair``,
  whose ``protocol.transport`` and ``remote_addr`` the node sends on).
- ``aioice.ice.get_host_addresses``: the module-level function a ``Connection`` asks for
  the addresses of its host candidates; :func:`restrict_host_addresses` replaces it when
  ``MEDIA_NODE_ICE_ADDRESSES`` names the addresses to bind (loopback in the embedded stack).
- ``aiortc.codecs.CODECS``: the module-level codec table; Opus gets ``usedtx=1`` so the
  node's answers ask publishers for DTX (see :func:`enable_opus_dtx`).
- ``RTCPeerConnection.__connect``: the task aiortc starts, unawaited, once both
  descriptions are set. Closing the peer connection while it runs makes it raise
  ``InvalidStateError``, which asyncio reports as "Task exception was never retrieved"
  (:func:`absorb_connect_after_close` recognises it by the coroutine's name).
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aioice
import aioice.ice
import aiortc
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import RTCDtlsTransport, RTCIceTransport, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import CODECS
from aiortc.exceptions import InvalidStateError

#: The versions whose internals this module was written and tested against.
AIORTC_MINOR = "1.16"
AIOICE_MINOR = "0.13"


class HooksUnavailable(RuntimeError):
    """The installed aiortc/aioice lacks an internal the packet path relies on."""


def check() -> None:
    """Raise :class:`HooksUnavailable` unless every internal named above exists."""
    problems: list[str] = []
    if not aiortc.__version__.startswith(AIORTC_MINOR + "."):
        problems.append(f"aiortc {aiortc.__version__} (expected {AIORTC_MINOR}.x)")
    if not aioice.__version__.startswith(AIOICE_MINOR + "."):
        problems.append(f"aioice {aioice.__version__} (expected {AIOICE_MINOR}.x)")
    owner: Any
    names: tuple[str, ...]
    for owner, names in (
        (RTCRtpSender, ("send", "stop")),
        (RTCRtpReceiver, ("receive", "stop")),
        (RTCDtlsTransport, ("_handle_rtp_data", "_handle_rtcp_data", "transport", "state")),
        (StunProtocol, ("datagram_received",)),
        (CandidatePair, ("remote_addr",)),
    ):
        for name in names:
            if not hasattr(owner, name):
                problems.append(f"{owner.__name__}.{name}")
    source_checks = {
        "RTCDtlsTransport.__init__ sets _rx_srtp/_tx_srtp": (
            RTCDtlsTransport.__init__,
            ("_rx_srtp", "_tx_srtp"),
        ),
        "RTCIceTransport.__init__ sets _connection": (RTCIceTransport.__init__, ("_connection",)),
        "Connection.__init__ sets _nominated/_protocols": (
            Connection.__init__,
            ("_nominated", "_protocols"),
        ),
        "CandidatePair.__init__ sets protocol": (CandidatePair.__init__, ("protocol",)),
        "RTCRtpSender.__init__ sets _ssrc/_rtx_ssrc": (
            RTCRtpSender.__init__,
            ("_ssrc", "_rtx_ssrc"),
        ),
    }
    for what, (function, names) in source_checks.items():
        code_names = set(function.__code__.co_names)
        if not set(names) <= code_names:
            problems.append(what)
    connect = getattr(aiortc.RTCPeerConnection, "_RTCPeerConnection__connect", None)
    if getattr(connect, "__qualname__", "") != CONNECT_TASK:
        problems.append(CONNECT_TASK)
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        problems.append("aioice.ice.get_host_addresses")
    opus = [c for c in CODECS.get("audio", []) if c.mimeType.lower() == "audio/opus"]
    if not opus:
        problems.append("aiortc.codecs.CODECS has no Opus entry")
    if problems:
        raise HooksUnavailable("aiortc internals missing: " + ", ".join(problems))


def enable_opus_dtx() -> None:
    """Put ``usedtx=1`` in aiortc's Opus codec parameters (process-wide, idempotent).

    The node's SDP answers then carry ``a=fmtp:<pt> ... usedtx=1``, and browsers send ~5
    packets/s from a silent microphone instead of 50. (``setCodecPreferences`` refuses a
    parameter that is not in the capabilities, hence the table.)
    """
    for codec in CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters["usedtx"] = 1


def restrict_host_addresses(addresses: list[str]) -> None:
    """Bind every ICE host candidate of this process to ``addresses`` only (process-wide).

    aioice gathers on every interface address but loopback; a node that must listen only
    where it is told (loopback for the embedded stack, one public interface on a host with
    several) names them here. IPv4 and IPv6 are kept as the connection asks.
    """
    import ipaddress

    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            a
            for a in chosen
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    aioice.ice.get_host_addresses = host_addresses


#: ``__qualname__`` of the coroutine aiortc runs, unawaited, to start ICE and DTLS.
CONNECT_TASK = "RTCPeerConnection.__connect"


def connect_after_close(context: dict[str, Any]) -> bool:
    """Whether an unhandled-exception ``context`` is aiortc's connect task meeting a closed
    transport: the leg was closed (left, failed, timed out) while ICE was starting, which
    is the expected end of that task, not a fault."""
    exc = context.get("exception")
    task = context.get("future")
    if not isinstance(exc, InvalidStateError) or not isinstance(task, asyncio.Task):
        return False
    return getattr(task.get_coro(), "__qualname__", "") == CONNECT_TASK


def absorb_connect_after_close(
    loop: asyncio.AbstractEventLoop, on_absorbed: Callable[[str], None]
) -> None:
    """Chain an exception handler on ``loop`` that tells ``on_absorbed`` (with the
    exception's message) instead of logging a traceback for :func:`connect_after_close`
    cases, and passes every other case on to the handler that was there before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if connect_after_close(context):
            on_absorbed(str(context["exception"]))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


SendParameters = Any  # aiortc.RTCRtpSendParameters
ReceiveParameters = Any  # aiortc.RTCRtpReceiveParameters


def stub_sender(sender: Any, on_send: Callable[[SendParameters], None]) -> None:
    """Take ``sender.send`` over: report its parameters, start nothing of aiortc's."""

    async def send(parameters: SendParameters) -> None:
        on_send(parameters)

    sender.send = send


def stub_receiver(receiver: Any, on_receive: Callable[[ReceiveParameters], None]) -> None:
    """Take ``receiver.receive`` over: report its parameters, start nothing of aiortc's."""

    async def receive(parameters: ReceiveParameters) -> None:
        on_receive(parameters)

    receiver.receive = receive


def sender_ssrcs(sender: Any) -> tuple[int, int]:
    """The media and RTX SSRCs aiortc announces in the SDP for ``sender``."""
    return int(sender._ssrc), int(sender._rtx_ssrc)


def srtp_sessions(dtls: Any) -> tuple[Any, Any]:
    """``(rx, tx)`` ``pylibsrtp.Session`` s of a DTLS transport (``None`` before keys)."""
    return dtls._rx_srtp, dtls._tx_srtp


def ice_connection(dtls: Any) -> Any:
    """The ``aioice.Connection`` under a DTLS transport."""
    return dtls.transport._connection


def local_protocols(connection: Any) -> list[Any]:
    """One ``StunProtocol`` per local candidate (what receives the datagrams)."""
    return list(connection._protocols)


def nominated_pairs(connection: Any) -> dict[int, Any]:
    """Component -> selected candidate pair (live dict: aioice updates it in place)."""
    nominated: dict[int, Any] = connection._nominated
    return nominated


DatagramHandler = Callable[[bytes, tuple[Any, ...]], None]
PlainHandler = Callable[[bytes], Awaitable[None]]


def hook_datagrams(protocol: Any, wrap: Callable[[DatagramHandler], DatagramHandler]) -> bool:
    """Replace one protocol's ``datagram_received`` with ``wrap(original)`` (once)."""
    current = protocol.datagram_received
    if getattr(current, "_meeshy_hook", False):
        return False
    hooked = wrap(current)
    hooked._meeshy_hook = True  # type: ignore[attr-defined]
    protocol.datagram_received = hooked
    return True


def hook_plain_rtp(dtls: Any, on_rtp: Callable[[bytes], None], on_rtcp: PlainHandler) -> None:
    """Route what aiortc itself decrypts (the slow path) to the node instead of its router."""

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        del arrival_time_ms
        on_rtp(data)

    dtls._handle_rtp_data = handle_rtp_data
    dtls._handle_rtcp_data = on_rtcp
