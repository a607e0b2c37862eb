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
    AnswerDownlink,
    CloseSession,
    DownlinkOffer,
    LeasesRenewed,
    MediaAck,
    OpenDownlink,
    OpenSession,
    Publish,
    RenewLeases,
    SdpAnswer,
    SessionOpened,
    SetPreferences,
    SetTranscription,
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
            (OpenDownlink, self.open_downlink),
            (AnswerDownlink, self.answer_downlink),
            (SetPreferences, self.set_preferences),
            (SetTranscription, self.set_transcription),
            (RenewLeases, self.renew_leases),
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
            session, replaced = self.registry.open(req)
            if replaced is not None:
                await self.registry.teardown(replaced, "replaced")
        return SessionOpened(
            session_id=session.session_id,
            node_id=self.node_id,
            call_id=req.call_id,
            participant_id=req.participant_id,
            purpose=session.purpose,
            lease_s=session.lease_s,
            video_slots=session.video_slots,
            audio_slots=session.audio_slots,
            replaced_session_id=replaced.session_id if replaced is not None else None,
        )

    async def publish(self, req: Publish, _: Incoming) -> SdpAnswer:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            return await session.publish(req.sdp)

    async def open_downlink(self, req: OpenDownlink, _: Incoming) -> DownlinkOffer:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            return await session.open_downlink()

    async def answer_downlink(self, req: AnswerDownlink, _: Incoming) -> MediaAck:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            await session.answer_downlink(req.sdp)
        return MediaAck(session_id=session.session_id)

    async def set_preferences(self, req: SetPreferences, _: Incoming) -> MediaAck:
        session = self.registry.get(req.session_id)
        if session.purpose != "call":
            raise RpcFailure("bad_request", "a captions session receives nothing")
        if session.participant_id in req.pinned:
            raise RpcFailure("bad_request", "a session cannot pin its own participant")
        session.pinned = list(dict.fromkeys(req.pinned))
        session.video_tiles = req.video_tiles
        room = self.registry.room_of(session)
        if room is not None:
            room.reassign("pinned")
        return MediaAck(session_id=session.session_id)

    async def set_transcription(self, req: SetTranscription, _: Incoming) -> MediaAck:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            await session.set_transcription(req.enabled, req.language)
        return MediaAck(session_id=session.session_id)

    async def renew_leases(self, req: RenewLeases, _: Incoming) -> LeasesRenewed:
        renewed, unknown = self.registry.renew(req.session_ids, req.lease_s)
        return LeasesRenewed(node_id=self.node_id, renewed=renewed, unknown=unknown)

    async def close_session(self, req: CloseSession, _: Incoming) -> MediaAck:
        session = self.registry.get(req.session_id)
        with self._in_flight:
            change = await self.registry.close(session, req.reason)
        if change is not None:
            await self._on_speaker_change(session.call_id, change)
        return MediaAck(session_id=req.session_id)
