"""The media-node sessions this gateway holds for its participants, and their leases.

A gateway opens a session (``media.rpc.<node>.open_session``) for each participant whose
socket it holds and who should have one (:mod:`gateway.media.plan`), relays the client's
SDP to it, and renews the leases of all its sessions on a node in one ``renew_leases``
request about every third of the lease. A gateway that dies stops renewing: its sessions
close themselves on the node when their lease runs out, so a dead gateway never leaks
media-node capacity that placement then trusts. A participant that reconnects through
another gateway gets a new session there, which replaces this one on the node (and this
gateway's next renewal learns it is gone).
"""

import asyncio
import contextlib
from dataclasses import dataclass, replace
from typing import TypeVar

from gateway.errors import CallError
from schemas import subjects
from schemas.bus import Bus
from schemas.errors import BadReply, NoResponders, RequestTimeout, RpcFailed
from schemas.logs import get_logger
from schemas.media import (
    CloseSession,
    LeasesRenewed,
    MediaAck,
    MediaRequest,
    OpenSession,
    RenewLeases,
    SessionOpened,
    SessionPurpose,
    SetTranscription,
)

log = get_logger("gateway.media.sessions")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A session this gateway opened on a node for one participant."""

    call_id: str
    participant_id: str
    purpose: SessionPurpose
    node_id: str
    session_id: str
    video_slots: int = 0
    audio_slots: int = 0
    #: Whether the node taps its microphone, and in which language (as last set).
    transcription: bool = False
    language: str = "en"


Key = tuple[str, str, SessionPurpose]


class NodeRefused(Exception):
    """The media node would not (or could not) open a session."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaSessions:
    """This gateway's sessions, by (call, participant, purpose), with their leases."""

    def __init__(
        self,
        bus: Bus,
        *,
        lease_s: float,
        rpc_timeout_s: float,
        video_slots: int | None = None,
        audio_slots: int | None = None,
    ) -> None:
        self._bus = bus
        self.lease_s = lease_s
        self.rpc_timeout_s = rpc_timeout_s
        self._video_slots = video_slots
        self._audio_slots = audio_slots
        self._refs: dict[Key, SessionRef] = {}
        self._opening: dict[Key, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        #: Set whenever a session is opened or forgotten (waiters re-check).
        self._changed = asyncio.Event()
        self.opened = 0
        self.closed = 0
        self.renewals = 0
        self.lost = 0

    # --- lookup --------------------------------------------------------------------------
    def get(
        self, call_id: str, participant_id: str, purpose: SessionPurpose = "call"
    ) -> SessionRef | None:
        return self._refs.get((call_id, participant_id, purpose))

    def of_call(self, call_id: str) -> list[SessionRef]:
        return [r for (c, _, _), r in self._refs.items() if c == call_id]

    def by_session_id(self, session_id: str) -> SessionRef | None:
        for ref in self._refs.values():
            if ref.session_id == session_id:
                return ref
        return None

    @property
    def count(self) -> int:
        return len(self._refs)

    async def wait_for(
        self, call_id: str, participant_id: str, purpose: SessionPurpose, timeout: float
    ) -> SessionRef | None:
        """The participant's session of ``purpose`` once one is open (``None`` after
        ``timeout`` seconds without one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (ref := self.get(call_id, participant_id, purpose)) is None:
            left = deadline - loop.time()
            if left <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return ref

    def _touch(self) -> None:
        self._changed.set()

    # --- opening and closing ---------------------------------------------------------------
    async def ensure(
        self,
        call_id: str,
        participant_id: str,
        node_id: str,
        *,
        purpose: SessionPurpose = "call",
        transcription: bool = False,
        language: str = "en",
    ) -> SessionRef:
        """The participant's session on ``node_id``, opened if it has none there.

        A session on another node is closed first (a call moves between nodes only when its
        node died). Raises :class:`NodeRefused` when the node refuses or does not answer.
        """
        key: Key = (call_id, participant_id, purpose)
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            ref = self._refs.get(key)
            if ref is not None and ref.node_id == node_id:
                return ref
            if ref is not None:
                await self.close(ref)
            request = OpenSession(
                call_id=call_id,
                participant_id=participant_id,
                purpose=purpose,
                transcription=transcription,
                language=language,
                lease_s=self.lease_s,
                video_slots=self._video_slots,
                audio_slots=self._audio_slots,
            )
            try:
                opened: SessionOpened = await self._bus.request(
                    subjects.media_rpc(node_id, OpenSession.verb),
                    request,
                    SessionOpened,
                    timeout=self.rpc_timeout_s,
                )
            except RpcFailed as exc:
                raise NodeRefused(exc.code) from None
            except (RequestTimeout, NoResponders, BadReply) as exc:
                raise NodeRefused(type(exc).__name__) from None
            ref = SessionRef(
                call_id=call_id,
                participant_id=participant_id,
                purpose=purpose,
                node_id=node_id,
                session_id=opened.session_id,
                video_slots=opened.video_slots,
                audio_slots=opened.audio_slots,
                transcription=transcription,
                language=language,
            )
            self._refs[key] = ref
            self._touch()
            self.opened += 1
            log.info(
                "media.session_opened",
                call_id=call_id,
                participant_id=participant_id,
                node_id=node_id,
                purpose=purpose,
            )
            return ref

    async def close(self, ref: SessionRef, reason: str = "left") -> None:
        """Close a session on its node (best effort: an unreachable node expires it)."""
        self.forget(ref.session_id)
        try:
            await self._bus.request(
                subjects.media_rpc(ref.node_id, CloseSession.verb),
                CloseSession(
                    session_id=ref.session_id, reason="failed" if reason == "failed" else "left"
                ),
                MediaAck,
                timeout=self.rpc_timeout_s,
            )
        except (RpcFailed, RequestTimeout, NoResponders, BadReply) as exc:
            log.info("media.session_close_failed", node_id=ref.node_id, error=type(exc).__name__)
        self.closed += 1
        log.info(
            "media.session_closed",
            call_id=ref.call_id,
            participant_id=ref.participant_id,
            node_id=ref.node_id,
        )

    def forget(self, session_id: str) -> SessionRef | None:
        """Drop a session the node closed itself (or that another gateway replaced)."""
        for key, ref in list(self._refs.items()):
            if ref.session_id == session_id:
                del self._refs[key]
                self._opening.pop(key, None)
                self._touch()
                return ref
        return None

    async def configure(self, ref: SessionRef, *, transcription: bool, language: str) -> SessionRef:
        """Turn the session's transcription on or off and set its spoken language, without
        reopening it (its media keeps flowing). Raises ``CallError`` as :meth:`request`."""
        await self.request(
            ref,
            SetTranscription(session_id=ref.session_id, enabled=transcription, language=language),
            MediaAck,
        )
        updated = replace(ref, transcription=transcription, language=language)
        key: Key = (ref.call_id, ref.participant_id, ref.purpose)
        if self._refs.get(key) == ref:
            self._refs[key] = updated
        log.info(
            "media.session_transcription",
            call_id=ref.call_id,
            participant_id=ref.participant_id,
            purpose=ref.purpose,
            enabled=transcription,
            language=language,
        )
        return updated

    # --- talking to a session's node -------------------------------------------------------
    async def request(self, ref: SessionRef, request: MediaRequest, reply_type: type[T]) -> T:
        """Relay a request about ``ref`` to its node; failures become typed refusals."""
        try:
            return await self._bus.request(
                subjects.media_rpc(ref.node_id, request.verb),
                request,
                reply_type,
                timeout=self.rpc_timeout_s,
            )
        except RpcFailed as exc:
            if exc.code == "not_found":
                self.forget(ref.session_id)
                raise CallError(
                    "not_found", "the media session is gone; wait for a new one"
                ) from None
            if exc.code == "bad_request":
                raise CallError("bad_request", exc.message) from None
            if exc.code == "conflict":
                raise CallError("conflict", exc.message) from None
            raise CallError("unavailable", "the media node cannot do that right now") from None
        except (RequestTimeout, NoResponders, BadReply):
            raise CallError("unavailable", "the media node did not answer") from None

    # --- leases ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew_loop(), name="leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew_all()
            except Exception as exc:  # one bad round must not end the leases
                log.warning("media.renew_failed", error=type(exc).__name__)

    async def renew_all(self) -> None:
        """Renew every lease, each node at once (a stalled node must not hold up the
        others' renewals past their leases)."""
        by_node: dict[str, list[str]] = {}
        for ref in self._refs.values():
            by_node.setdefault(ref.node_id, []).append(ref.session_id)
        await asyncio.gather(*(self._renew(n, ids) for n, ids in by_node.items()))

    async def _renew(self, node_id: str, session_ids: list[str]) -> None:
        try:
            reply: LeasesRenewed = await self._bus.request(
                subjects.media_rpc(node_id, RenewLeases.verb),
                RenewLeases(session_ids=session_ids, lease_s=self.lease_s),
                LeasesRenewed,
                timeout=min(self.rpc_timeout_s, self.lease_s / 3),
            )
        except (RpcFailed, RequestTimeout, NoResponders, BadReply) as exc:
            log.warning("media.renew_unanswered", node_id=node_id, error=type(exc).__name__)
            return
        self.renewals += 1
        for session_id in reply.unknown:
            if self.forget(session_id) is not None:
                self.lost += 1
                log.info("media.session_unknown_to_node", node_id=node_id)
