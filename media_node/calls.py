"""The calls and sessions a node holds, and the active speaker of each call."""

import asyncio

from media_node.session import NodeContext, ParticipantSession, Subscription
from media_node.speaker import ActiveSpeakerDetector, SpeakerChange
from schemas.bus import RpcFailure
from schemas.ids import new_id
from schemas.logs import get_logger

log = get_logger("media_node.calls")


class CallRoom:
    """The participants of one call on this node."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.sessions: dict[str, ParticipantSession] = {}  # by participant id
        self.speaker = ActiveSpeakerDetector()


class SessionRegistry:
    """Opens, finds and closes sessions; knows when the node is idle."""

    def __init__(self, node: NodeContext, *, capacity: int) -> None:
        self.node = node
        self.capacity = capacity
        self.rooms: dict[str, CallRoom] = {}
        self.sessions: dict[str, ParticipantSession] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        #: Sessions detached from the maps whose media is still being torn down.
        self._closing: set[ParticipantSession] = set()

    @property
    def participants(self) -> int:
        return len(self.sessions)

    @property
    def forwarded_streams(self) -> int:
        return sum(s.forwarded_streams for s in self.sessions.values())

    @property
    def published_tracks(self) -> int:
        return sum(len(s.forwarders) for s in self.sessions.values())

    @property
    def keyframe_requests(self) -> int:
        return sum(s.keyframes.sent for s in self.sessions.values())

    async def open(
        self, *, call_id: str, participant_id: str, transcription: bool, language: str
    ) -> ParticipantSession:
        """Open a session; a participant reopening replaces (and closes) its old one.

        The maps change with no await in between, so concurrent requests (RPCs are answered
        concurrently) always see a consistent registry; the old session is torn down after,
        without holding up other requests.
        """
        room = self.rooms.get(call_id)
        old = room.sessions.get(participant_id) if room else None
        if old is None and self.participants >= self.capacity:
            raise RpcFailure("unavailable", "this media node is full")
        if old is not None:
            # The same participant is back: no "nobody speaks" event for a reconnect blink.
            self._detach(old)
        room = self.rooms.setdefault(call_id, CallRoom(call_id))
        speaker = room.speaker
        session = ParticipantSession(
            session_id=new_id(),
            call_id=call_id,
            participant_id=participant_id,
            transcription=transcription,
            language=language,
            node=self.node,
            on_level=speaker.update,
        )
        room.sessions[participant_id] = session
        self.sessions[session.session_id] = session
        self._idle.clear()
        if old is not None:
            log.info("session.replaced", call_id=call_id, participant_id=participant_id)
            await self._teardown(old)
        log.info(
            "session.opened",
            call_id=call_id,
            participant_id=participant_id,
            transcription=transcription,
        )
        return session

    def get(self, session_id: str) -> ParticipantSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise RpcFailure("not_found", "no such session on this node")
        return session

    def subscription(self, session: ParticipantSession, subscription_id: str) -> Subscription:
        sub = session.subscriptions.get(subscription_id)
        if sub is None:
            raise RpcFailure("not_found", "no such subscription in this session")
        return sub

    async def subscribe(self, session: ParticipantSession, publisher_id: str) -> Subscription:
        if publisher_id == session.participant_id:
            raise RpcFailure("bad_request", "a participant cannot subscribe to itself")
        room = self.rooms.get(session.call_id)
        publisher = room.sessions.get(publisher_id) if room else None
        if publisher is None:
            raise RpcFailure("not_found", "that participant has no session in this call here")
        for sub in session.subscriptions.values():
            if sub.publisher is publisher:
                raise RpcFailure("conflict", "already subscribed to that participant")
        return Subscription(session, publisher)

    async def close(self, session_id: str) -> SpeakerChange | None:
        session = self.get(session_id)
        change = self._detach(session)
        await self._teardown(session)
        return change

    def _detach(self, session: ParticipantSession) -> SpeakerChange | None:
        """Remove a session from the maps (synchronously: no request sees it half-gone)."""
        self.sessions.pop(session.session_id, None)
        room = self.rooms.get(session.call_id)
        change = None
        if room is not None:
            if room.sessions.get(session.participant_id) is session:
                del room.sessions[session.participant_id]
                change = room.speaker.remove(session.participant_id)
            if not room.sessions:
                del self.rooms[session.call_id]
                change = None  # nobody is left to tell
        return change

    async def _teardown(self, session: ParticipantSession) -> None:
        self._closing.add(session)
        try:
            await session.close()
        except Exception as exc:  # close() is best effort per step; never block draining
            log.warning(
                "session.close_failed",
                call_id=session.call_id,
                participant_id=session.participant_id,
                error=type(exc).__name__,
            )
        finally:
            self._closing.discard(session)
            if not self.sessions and not self._closing:
                self._idle.set()

    async def close_all(self) -> None:
        sessions = list(self.sessions.values())
        for session in sessions:
            self._detach(session)
        await asyncio.gather(*(self._teardown(s) for s in sessions))

    async def wait_idle(self) -> None:
        await self._idle.wait()
