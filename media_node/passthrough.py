"""The receiver hook: make aiortc hand the SFU encoded frames instead of decoded ones.

aiortc's ``RTCRtpReceiver`` reassembles RTP into encoded frames on the event loop, then a
thread running the module-level function ``aiortc.rtcrtpreceiver.decoder_worker`` decodes
them into ``VideoFrame``/``AudioFrame`` and feeds the track's queue. For the SFU we want
the encoded frame itself: an ``RTCRtpSender`` given an ``av.Packet`` only packetises it
(``encoder.pack``), so forwarding needs no decode and no encode.

The adaptation, documented and tested (tests/unit/test_media_passthrough.py):

- :func:`install` replaces ``decoder_worker`` with a dispatcher. It runs aiortc's original
  worker for every receiver, except those whose track queue is a :class:`PassthroughQueue`;
  for those it runs :func:`passthrough_worker`, which wraps each encoded frame in an
  ``av.Packet`` (pts = RTP timestamp, time base = 1/clock rate) without decoding it.
- :func:`enable_passthrough` marks one remote track. It must run in the peer connection's
  ``track`` event, which aiortc fires before ``receive()`` starts the worker thread.
  Given the track's receiver too, it also replaces the receiver's queue to that thread
  (:class:`InlineFrameQueue`): each frame then becomes an ``av.Packet`` right where the
  receiver completes it, on the event loop, and the thread exits at once. Wrapping a frame
  costs a few microseconds; the thread hop it replaces (a ``queue.Queue`` put and get, a GIL
  handover, ``call_soon_threadsafe`` waking the loop through its self-pipe) cost far more
  per frame, for every published track.
- :class:`ReceiverHooks` observes the RTP packets of one receiver (audio level header
  extension, the publisher's primary SSRC), sends PLIs on behalf of subscribers, and
  reports when the receiver itself asked for a keyframe (its jitter buffer dropped data).
- :func:`on_keyframe_request` makes a sender report the PLI/FIR of its subscriber instead
  of setting an encoder flag nobody reads in passthrough.

No aiortc source is copied or forked; the hooks use instance attributes (``_handle_rtp_packet``,
``_send_rtcp_pli``, ``_send_keyframe``) that aiortc's transport and RTCP code call by name,
and the receiver's private ``__decoder_queue`` (only its ``put``/``get`` are used; if it is
missing, the thread path stays).
"""

import asyncio
import fractions
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiortc import rtcrtpreceiver
from aiortc.mediastreams import MediaStreamTrack

_original_worker: Callable[..., None] = rtcrtpreceiver.decoder_worker
_install_lock = threading.Lock()


class PassthroughQueue(asyncio.Queue[Any]):
    """The queue of a remote track whose frames must stay encoded (a marker type)."""


def _to_packet(
    encoded_frame: Any, time_bases: dict[int, fractions.Fraction], clock_rate: int
) -> "av.Packet[Any]":
    time_base = time_bases.get(clock_rate)
    if time_base is None:
        time_base = time_bases[clock_rate] = fractions.Fraction(1, clock_rate)
    packet = av.Packet(encoded_frame.data)
    packet.pts = encoded_frame.timestamp
    packet.time_base = time_base
    return packet


class InlineFrameQueue:
    """Stands in for a receiver's ``queue.Queue`` to its decoder thread (see the docstring).

    aiortc calls ``put`` on the event loop, with ``(codec, JitterFrame)`` for each complete
    frame and ``None`` when the receiver stops; both go straight to the track's queue.
    """

    def __init__(self, output_q: "asyncio.Queue[Any]") -> None:
        self._output_q = output_q
        self._time_bases: dict[int, fractions.Fraction] = {}

    def put(self, task: Any) -> None:
        if task is None:
            self._output_q.put_nowait(None)
            return
        codec, encoded_frame = task
        self._output_q.put_nowait(_to_packet(encoded_frame, self._time_bases, codec.clockRate))

    def get(self) -> None:
        """What the (idle) worker thread would read: nothing, so it ends at once."""
        return None


def passthrough_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: "queue.Queue[Any]",
    output_q: "asyncio.Queue[Any]",
    decode_error: threading.Event,
) -> None:
    """Like aiortc's ``decoder_worker``, but emits each encoded frame as an ``av.Packet``."""
    del decode_error  # nothing is decoded, so nothing can fail to decode
    time_bases: dict[int, fractions.Fraction] = {}
    while True:
        task = input_q.get()
        if task is None:
            loop.call_soon_threadsafe(output_q.put_nowait, None)
            return
        codec, encoded_frame = task
        packet = _to_packet(encoded_frame, time_bases, codec.clockRate)
        try:
            loop.call_soon_threadsafe(output_q.put_nowait, packet)
        except RuntimeError:  # the loop closed under us: nobody is listening any more
            return


def _dispatching_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: "queue.Queue[Any]",
    output_q: "asyncio.Queue[Any]",
    decode_error: threading.Event,
) -> None:
    if isinstance(input_q, InlineFrameQueue):
        return  # frames are wrapped on the event loop; this thread has nothing to do
    worker = passthrough_worker if isinstance(output_q, PassthroughQueue) else _original_worker
    worker(loop, input_q, output_q, decode_error)


def install() -> None:
    """Route marked receivers to :func:`passthrough_worker` (idempotent, process-wide).

    Unmarked receivers keep aiortc's own decoder, so a process may mix both.
    """
    with _install_lock:
        rtcrtpreceiver.decoder_worker = _dispatching_worker


def installed() -> bool:
    return rtcrtpreceiver.decoder_worker is _dispatching_worker


_DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"


def enable_passthrough(track: MediaStreamTrack, receiver: Any = None) -> None:
    """Make a remote track deliver ``av.Packet`` s. Call from the ``track`` event.

    With ``receiver`` (the track's ``RTCRtpReceiver``), frames are wrapped on the event loop
    instead of in a thread. If a future aiortc renames the private queue, or the receiver
    already queued frames, the thread path is kept (same output, more CPU).
    """
    if not installed():
        raise RuntimeError("media_node.passthrough.install() was not called")
    current = track._queue  # type: ignore[attr-defined]
    if not isinstance(current, PassthroughQueue):
        if not current.empty():
            raise RuntimeError("the track already received decoded frames")
        current = track._queue = PassthroughQueue()  # type: ignore[attr-defined]
    if receiver is None:
        return
    thread_q = getattr(receiver, _DECODER_QUEUE_ATTR, None)
    if isinstance(thread_q, InlineFrameQueue):
        return
    if not isinstance(thread_q, queue.Queue) or not thread_q.empty():
        return
    setattr(receiver, _DECODER_QUEUE_ATTR, InlineFrameQueue(current))


RtpObserver = Callable[[Any], None]


class ReceiverHooks:
    """Hooks on one ``RTCRtpReceiver`` of a publisher's leg.

    ``observe`` sees every RTP packet before aiortc handles it (same order, event loop).
    ``on_own_pli`` runs when the receiver itself asks the publisher for a keyframe, which it
    does when its jitter buffer had to drop packets: the SFU lost part of a frame.
    """

    def __init__(
        self,
        receiver: Any,
        *,
        observe: RtpObserver | None = None,
        on_own_pli: Callable[[], None] | None = None,
    ) -> None:
        self.receiver = receiver
        self._send_pli: Callable[[int], Awaitable[None]] = receiver._send_rtcp_pli
        if observe is not None:
            handle: Callable[..., Awaitable[None]] = receiver._handle_rtp_packet

            async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
                observe(packet)
                await handle(packet, arrival_time_ms=arrival_time_ms)

            receiver._handle_rtp_packet = handle_rtp_packet
        if on_own_pli is not None:
            send_pli = self._send_pli

            async def send_rtcp_pli(media_ssrc: int) -> None:
                on_own_pli()
                await send_pli(media_ssrc)

            receiver._send_rtcp_pli = send_rtcp_pli

    async def send_pli(self, media_ssrc: int) -> None:
        """Ask the publisher for a keyframe on ``media_ssrc`` (not reported as our own loss)."""
        await self._send_pli(media_ssrc)


def on_keyframe_request(sender: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the sender's remote peer sends a PLI or FIR.

    aiortc's sender would only set a flag for its encoder, which passthrough never uses.
    """
    sender._send_keyframe = callback
