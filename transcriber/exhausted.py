"""Chunks that crashed or stalled every worker they reached, dead-lettered instead of lost.

A chunk whose worker dies (or stalls past ``ack_wait``) is offered again, up to the shared
consumer's ``max_deliver``. After the last delivery JetStream offers it to nobody: it would
sit unacknowledged in the work queue until the stream's age limit dropped it, with no
trace. The server announces that moment (the ``MAX_DELIVERIES`` advisory); one transcriber
of the queue group reads the chunk back by its stream sequence and parks it on
``dlq.audio.chunk.<call>.<participant>`` with its audio, like any other dead letter, so an
operator sees it and can replay it.

Chunks a worker refuses or fails itself never reach this path: the worker dead-letters
them on their last delivery and acknowledges them.
"""

from collections.abc import Callable

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from schemas import subjects
from schemas.bus import Bus
from schemas.codec import encode
from schemas.dead_letter import DeadLetter
from schemas.logs import get_logger

log = get_logger("transcriber.exhausted")


class MaxDeliveries(msgspec.Struct, frozen=True):
    """The fields of the server's advisory this service uses (it has more)."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


class ExhaustedChunks:
    """Dead-letters the chunks of one consumer that ran out of deliveries."""

    def __init__(
        self,
        *,
        bus: Bus,
        durable: str,
        service_id: str,
        on_dead_letter: Callable[[], None] = lambda: None,
    ) -> None:
        self.bus = bus
        self.durable = durable
        self.service_id = service_id
        self._on_dead_letter = on_dead_letter
        self._decoder = msgspec.json.Decoder(MaxDeliveries)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        subject = subjects.js_max_deliveries(subjects.AUDIO_CHUNKS_STREAM, self.durable)
        # A queue group: one transcriber handles each advisory.
        self._sub = await self.bus.nc.subscribe(
            subject, queue=f"{self.durable}-exhausted", cb=self._on_advisory
        )

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:
                log.debug("exhausted.unsubscribe_failed", error=type(exc).__name__)

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = self._decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("exhausted.undecodable_advisory")
            return
        try:
            stored = await self.bus.js.get_msg(advisory.stream, advisory.stream_seq)
        except NotFoundError:
            return  # acknowledged or expired meanwhile: nothing lost
        except Exception as exc:
            log.error(
                "exhausted.read_failed", error=type(exc).__name__, stream_seq=advisory.stream_seq
            )
            return
        original = stored.subject or ""
        letter = DeadLetter(
            original_subject=original,
            failure="handler",
            reason=(
                f"delivery_exhausted: delivered {advisory.deliveries} times and never "
                "acknowledged (the workers it reached died or stalled on it)"
            ),
            payload=bytes(stored.data or b""),
            service_id=self.service_id,
            expected_type="AudioChunk",
            delivery_attempts=advisory.deliveries,
        )
        try:
            await self.bus.js.publish(subjects.dead_letter(original), encode(letter), timeout=2)
        except Exception as exc:
            log.error("exhausted.dead_letter_failed", error=type(exc).__name__)
            return
        self._on_dead_letter()
        log.warning(
            "exhausted.chunk_dead_lettered",
            subject=original,
            reason="delivery_exhausted",
            deliveries=advisory.deliveries,
            stream_seq=advisory.stream_seq,
        )
