"""The node's request/reply API on ``media.rpc.<node_id>.<verb>`` (see :mod:`schemas.media`).

One subscription per verb, each decoding its own request type: a request sent to the wrong
verb, or that does not decode, gets ``bad_request`` from the bus helper. Every refusal is
an :class:`schemas.bus.RpcFailure` with a code; anything unexpected becomes ``internal``
with no detail (the traceback stays in the log).
"""

from collections.abc import Awaitable, Callable
from typing import Any

from media_node.calls import SessionRegistry
from media_node.speaker import SpeakerChange
from schemas import subjects
from schemas.bus import Bus, Incoming, RpcFailure
from schemas.media import (
    AnswerSubscription,
    CloseSession,
    MediaAck,
    OpenSession,
    Publish,
    SdpAnswer,
    SessionOpened,
    Subscribe,
    SubscriptionOffer,
    Unsubscribe,
)
from schemas.runtime import InFlight

SpeakerSink = Callable[[str, SpeakerChange], Awaitable[None]]


class MediaRpc:
    """Answers the media RPC verbs against a :class:`SessionRegistry`."""

    def __init__(
        self,
        *,
        node_id: str,
        registry: SessionRegistry,
        accepting: Callable[[], bool],
        in_flight: InFlight,
        on_speaker_change: SpeakerSink,
    ) -> None:
        self.node_id = node_id
        self.registry = registry
        self._accepting = accepting
        self._in_flight = in_flight
        self._on_speaker_change = on_speaker_change

    async def serve(self, bus: Bus) -> list[Any]:
        handlers: list[tuple[type[Any], Callable[[Any, Incoming], Awaitable[Any]]]] = [
            (OpenSession, self.open_session),
            (Publish, self.publish),
            (Subscribe, self.subscribe),
            (AnswerSubscription, self.answer_subscription),
            (Unsubscribe, self.unsubscribe),
            (CloseSession, self.close_session),
        ]
        subs = []
        for request_type, handler in handlers:
            subject = subjects.media_rpc(self.node_id, request_type.verb)
            # SDP work takes a while; answer many participants at once (a whole call
            # migrating to this node), not one after another.
            subs.append(await bus.serve(subject, request_type, handler, concurrency=32))
        return subs

    async def open_session(self, req: OpenSession, _: Incoming) -> SessionOpened:
        if not self._accepting():
            raise RpcFailure("draining", "this media node is draining; pick another")
        with self._in_flight:
            session = await self.registry.open(
                call_id=req.call_id,
                participant_id=req.participant_id,
                transcription=req.transcription,
                language=req.language,
            )
        return SessionOpened(
            session_id=session.session_id,
            node_id=self.node_id,
            call_id=req.call_id,
            participant_id=req.participant_id,
        )

    async def publish(self, req: Publish, _: Incoming) -> SdpAnswer:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            sdp = await session.publish(req.sdp)
        return SdpAnswer(session_id=session.session_id, sdp=sdp)

    async def subscribe(self, req: Subscribe, _: Incoming) -> SubscriptionOffer:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            sub = await self.registry.subscribe(session, req.publisher_id)
            sdp = await sub.offer()
        return SubscriptionOffer(
            session_id=session.session_id,
            subscription_id=sub.subscription_id,
            publisher_id=req.publisher_id,
            sdp=sdp,
            kinds=["audio", "video"],
        )

    async def answer_subscription(self, req: AnswerSubscription, _: Incoming) -> MediaAck:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            await self.registry.subscription(session, req.subscription_id).answer(req.sdp)
        return MediaAck(session_id=session.session_id)

    async def unsubscribe(self, req: Unsubscribe, _: Incoming) -> MediaAck:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            await self.registry.subscription(session, req.subscription_id).close()
        return MediaAck(session_id=session.session_id)

    async def close_session(self, req: CloseSession, _: Incoming) -> MediaAck:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            change = await self.registry.close(req.session_id)
        if change is not None:
            await self._on_speaker_change(session.call_id, change)
        return MediaAck(session_id=req.session_id)
