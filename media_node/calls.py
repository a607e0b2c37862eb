"""The calls and sessions a node holds: who is in which slot, who must pause, leases.

:class:`CallRoom` is one call on this node. Every change that can move media (a session
joins, leaves or (re)publishes, a downlink connects, preferences change, the speakers
change) re-runs the selection for every receiver (:mod:`media_node.selector`), assigns
the slots (:meth:`media_node.slot.Slot.assign`), and leaves its side effects by one path:
slot maps (``SlotsChanged``, coalesced to one per session per loop turn) and video demand
(``VideoDemandChanged``, with a hold-down before a pause) through
:class:`media_node.events.MediaEvents`.
"""

import asyncio
import time
from dataclasses import dataclass

from media_node.leases import LeaseBook
from media_node.selector import AudioSelector, Candidate, SpeakerHistory, place, wanted_video
from media_node.session import NodeContext, ParticipantSession
from media_node.slot import Slot
from media_node.speaker import ActiveSpeakerDetector, SpeakerChange
from schemas import media
from schemas.bus import RpcFailure
from schemas.ids import new_id
from schemas.logs import get_logger
from schemas.media_events import SlotsChanged, VideoDemandChanged

log = get_logger("media_node.calls")


@dataclass(frozen=True, slots=True)
class SelectionSettings:
    speech_dbov: float = -50.0
    speak_after_s: float = 0.1
    audio_displace_s: float = 0.3
    demand_hold_s: float = 2.0


@dataclass(slots=True)
class _Demand:
    forwarded: bool = True
    receivers: int = 0
    zero_since: float | None = None


class CallRoom:
    """See the module docstring."""

    def __init__(self, call_id: str, node: NodeContext, selection: SelectionSettings) -> None:
        self.call_id = call_id
        self._node = node
        self._selection = selection
        #: ``call`` sessions by participant id (in join order), and ``captions`` ones.
        self.sessions: dict[str, ParticipantSession] = {}
        self.captions: dict[str, ParticipantSession] = {}
        self.speaker = ActiveSpeakerDetector(speech_dbov=selection.speech_dbov)
        self.history = SpeakerHistory(
            speech_dbov=selection.speech_dbov, speak_after_s=selection.speak_after_s
        )
        self.audio = AudioSelector(
            speech_dbov=selection.speech_dbov, displace_after_s=selection.audio_displace_s
        )
        self._joined = 0
        self._demand: dict[str, _Demand] = {}
        self._dirty: dict[str, str] = {}  # session id -> reason of the pending SlotsChanged
        self._flush_scheduled = False
        self._next_audio_check = 0.0

    def next_join(self) -> int:
        self._joined += 1
        return self._joined

    @property
    def empty(self) -> bool:
        return not self.sessions and not self.captions

    # --- hooks called by sessions ---------------------------------------------------------
    def level(self, participant_id: str, dbov: float) -> None:
        self.speaker.update(participant_id, dbov)

    def publishing_changed(self, session: ParticipantSession) -> None:
        if session.purpose == "call":
            self.reassign("joined")

    def downlink_changed(self, session: ParticipantSession) -> None:
        self.reassign("downlink")
        self._mark(session, "downlink")

    def showing_changed(self, session: ParticipantSession, slot: Slot) -> None:
        del slot
        self._mark(session, "keyframe")

    # --- membership -----------------------------------------------------------------------
    def add(self, session: ParticipantSession) -> None:
        if session.purpose == "call":
            self.sessions[session.participant_id] = session
            self._demand.setdefault(session.participant_id, _Demand())
        else:
            self.captions[session.participant_id] = session

    def remove(self, session: ParticipantSession) -> SpeakerChange | None:
        if session.purpose != "call":
            if self.captions.get(session.participant_id) is session:
                del self.captions[session.participant_id]
            return None
        if self.sessions.get(session.participant_id) is not session:
            return None
        del self.sessions[session.participant_id]
        pid = session.participant_id
        self._demand.pop(pid, None)
        self.history.remove(pid)
        self.audio.remove(pid)
        self._dirty.pop(session.session_id, None)
        change = self.speaker.remove(pid)
        for feed in session.feeds.values():
            feed.close()  # every slot showing it lets go now
        self.reassign("left")
        return change

    # --- selection ------------------------------------------------------------------------
    def _candidates(self) -> list[Candidate]:
        return [
            Candidate(
                participant_id=s.participant_id,
                joined=s.joined,
                video=s.publishes_video,
                audio=s.publishes_audio,
            )
            for s in self.sessions.values()
        ]

    def reassign(self, reason: str, now: float | None = None) -> None:
        """Re-run the selection for every receiver; assign slots; publish what changed."""
        now = time.monotonic() if now is None else now
        candidates = self._candidates()
        speakers = self.history.order
        for receiver in self.sessions.values():
            slots = receiver.slots
            if not slots:
                continue
            video = [s for s in slots if s.video]
            audio = [s for s in slots if not s.video]
            tiles = len(video) if receiver.video_tiles is None else receiver.video_tiles
            current_video = [s.assigned_id for s in video]
            want = wanted_video(
                receiver.participant_id,
                candidates,
                pinned=receiver.pinned,
                tiles=min(tiles, len(video)),
                speakers=speakers,
                holding=current_video,
            )
            changed = self._apply(video, place(current_video, want))
            current_audio = [s.assigned_id for s in audio]
            heard = self.audio.select(receiver.participant_id, candidates, current_audio, now)
            changed = self._apply(audio, heard) or changed
            if changed:
                self._mark(receiver, reason)
        self._update_demand(now)

    def _apply(self, slots: list[Slot], contents: list[str | None]) -> bool:
        changed = False
        for slot, pid in zip(slots, contents, strict=True):
            feed = None
            if pid is not None:
                publisher = self.sessions.get(pid)
                feed = publisher.feeds.get(slot.kind) if publisher is not None else None
            if slot.assigned is not feed:
                slot.assign(feed)
                changed = True
        return changed

    def _update_demand(self, now: float) -> None:
        counts: dict[str, int] = {}
        for receiver in self.sessions.values():
            for slot in receiver.slots:
                if slot.video and slot.assigned is not None:
                    pid = slot.assigned.participant_id
                    counts[pid] = counts.get(pid, 0) + 1
        for pid, publisher in self.sessions.items():
            if not publisher.publishes_video:
                continue
            state = self._demand.setdefault(pid, _Demand())
            receivers = counts.get(pid, 0)
            state.receivers = receivers
            if receivers:
                state.zero_since = None
                if not state.forwarded:
                    state.forwarded = True
                    self._emit_demand(publisher, True, receivers)
            elif state.forwarded:
                if state.zero_since is None:
                    state.zero_since = now
                elif now - state.zero_since >= self._selection.demand_hold_s:
                    state.forwarded = False
                    self._emit_demand(publisher, False, 0)

    def _emit_demand(self, publisher: ParticipantSession, forwarded: bool, receivers: int) -> None:
        log.info("demand.changed", forwarded=forwarded, receivers=receivers, **publisher.fields)
        self._node.emit(
            VideoDemandChanged(
                call_id=self.call_id,
                session_id=publisher.session_id,
                participant_id=publisher.participant_id,
                node_id=self._node.node_id,
                forwarded=forwarded,
                receivers=receivers,
            )
        )

    def video_forwarded(self, participant_id: str) -> bool:
        state = self._demand.get(participant_id)
        return state is not None and state.receivers > 0

    # --- the periodic part ----------------------------------------------------------------
    def tick(self, now: float) -> SpeakerChange | None:
        """Speakers, last-N and audio slots, demand hold-downs (every speaker interval)."""
        change = self.speaker.evaluate()
        levels = {pid: self.speaker.level(pid) for pid in self.sessions}
        moved = self.history.update(levels, now)
        before = {pid: self.audio.last_spoke(pid) for pid in levels}
        self.audio.update(levels, now)
        started = any(
            before[pid] is None or now - (before[pid] or 0.0) > self._selection.audio_displace_s
            for pid, level in levels.items()
            if level > self._selection.speech_dbov
        )
        self._wake_speakers(levels, now)
        if moved or started or now >= self._next_audio_check:
            self._next_audio_check = now + self._selection.audio_displace_s
            self.reassign("speaker", now)
        elif any(d.zero_since is not None for d in self._demand.values()):
            self._update_demand(now)
        return change

    def _wake_speakers(self, levels: dict[str, float], now: float) -> None:
        """A paused publisher who starts speaking is told to resume at once, before it is
        selected: its camera's restart then overlaps the speaker detection, and the slot
        switch only waits for one more keyframe. If nobody selects it, the hold-down
        pauses it again."""
        for pid, level in levels.items():
            if level <= self._selection.speech_dbov:
                continue
            state = self._demand.get(pid)
            publisher = self.sessions.get(pid)
            if state is None or state.forwarded or publisher is None:
                continue
            if not publisher.publishes_video:
                continue
            state.forwarded = True
            state.zero_since = now
            self._emit_demand(publisher, True, state.receivers)

    # --- slot maps --------------------------------------------------------------------------
    def _mark(self, session: ParticipantSession, reason: str) -> None:
        if session.downlink is None or session.closed:
            return
        self._dirty.setdefault(session.session_id, reason)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        by_id = {s.session_id: s for s in self.sessions.values()}
        for session_id, reason in dirty.items():
            session = by_id.get(session_id)
            if session is None or session.downlink is None or session.closed:
                continue
            session.mapping_version += 1
            self._node.emit(
                SlotsChanged(
                    call_id=self.call_id,
                    session_id=session.session_id,
                    participant_id=session.participant_id,
                    node_id=self._node.node_id,
                    version=session.mapping_version,
                    slots=[session.slot_info(s) for s in session.slots],
                    reason=reason,
                )
            )


class SessionRegistry:
    """Opens, finds, renews and closes sessions; knows when the node is idle."""

    def __init__(
        self,
        node: NodeContext,
        *,
        capacity: int,
        video_slots: int,
        audio_slots: int,
        selection: SelectionSettings | None = None,
    ) -> None:
        self.node = node
        self.capacity = capacity
        self.video_slots = video_slots
        self.audio_slots = audio_slots
        self.selection = selection or SelectionSettings()
        self.rooms: dict[str, CallRoom] = {}
        self.sessions: dict[str, ParticipantSession] = {}
        self._by_key: dict[tuple[str, str, str], ParticipantSession] = {}
        self.leases = LeaseBook()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Sessions detached from the maps whose media is still being torn down.
        self._closing: set[ParticipantSession] = set()

    @property
    def participants(self) -> int:
        return len(self.sessions)

    def open(self, req: media.OpenSession) -> tuple[ParticipantSession, ParticipantSession | None]:
        """Open a session; the same participant and purpose again replaces the old one.

        Synchronous: the maps change with no await in between, so concurrent requests
        always see a consistent registry. The caller closes the replaced session.
        """
        key = (req.call_id, req.participant_id, req.purpose)
        old = self._by_key.get(key)
        if old is None and self.participants >= self.capacity:
            raise RpcFailure("unavailable", "this media node is full")
        room = self.rooms.get(req.call_id)
        if room is None:
            room = self.rooms[req.call_id] = CallRoom(req.call_id, self.node, self.selection)
        if old is not None:
            self._detach(old)
        session = ParticipantSession(
            session_id=new_id(),
            call_id=req.call_id,
            participant_id=req.participant_id,
            purpose=req.purpose,
            transcription=req.transcription,
            language=req.language,
            lease_s=req.lease_s,
            video_slots=self.video_slots if req.video_slots is None else req.video_slots,
            audio_slots=self.audio_slots if req.audio_slots is None else req.audio_slots,
            joined=room.next_join(),
            node=self.node,
            room=room,
        )
        self.rooms.setdefault(req.call_id, room)
        room.add(session)
        self.sessions[session.session_id] = session
        self._by_key[key] = session
        self.leases.grant(session.session_id, req.lease_s, time.monotonic())
        self._idle.clear()
        log.info(
            "session.opened",
            purpose=req.purpose,
            transcription=req.transcription,
            replaced=old is not None,
            **session.fields,
        )
        return session, old

    def get(self, session_id: str) -> ParticipantSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise RpcFailure("not_found", "no such session on this node")
        self.leases.renew(session_id, time.monotonic())
        return session

    def renew(self, session_ids: list[str], lease_s: float | None) -> tuple[list[str], list[str]]:
        now = time.monotonic()
        renewed: list[str] = []
        unknown: list[str] = []
        for sid in dict.fromkeys(session_ids):
            (renewed if self.leases.renew(sid, now, lease_s) else unknown).append(sid)
        return renewed, unknown

    def room_of(self, session: ParticipantSession) -> CallRoom | None:
        return self.rooms.get(session.call_id)

    def _detach(self, session: ParticipantSession) -> SpeakerChange | None:
        """Remove a session from the maps (synchronously: no request sees it half-gone)."""
        self.sessions.pop(session.session_id, None)
        self.leases.drop(session.session_id)
        key = (session.call_id, session.participant_id, session.purpose)
        if self._by_key.get(key) is session:
            del self._by_key[key]
        room = self.rooms.get(session.call_id)
        change = None
        if room is not None:
            change = room.remove(session)
            if room.empty:
                del self.rooms[session.call_id]
                change = None  # nobody is left to tell
        return change

    async def close(
        self, session: ParticipantSession, reason: media.CloseReason
    ) -> SpeakerChange | None:
        change = self._detach(session)
        await self.teardown(session, reason)
        return change

    async def teardown(self, session: ParticipantSession, reason: media.CloseReason) -> None:
        self._closing.add(session)
        try:
            await session.close(reason)
        except Exception as exc:  # close() is best effort per step; never block draining
            log.warning("session.close_failed", error=type(exc).__name__, **session.fields)
        finally:
            self._closing.discard(session)
            if not self.sessions and not self._closing:
                self._idle.set()

    def expired(self) -> list[ParticipantSession]:
        now = time.monotonic()
        return [self.sessions[sid] for sid in self.leases.expired(now) if sid in self.sessions]

    async def close_all(self, reason: media.CloseReason) -> None:
        sessions = list(self.sessions.values())
        for session in sessions:
            self._detach(session)
        await asyncio.gather(*(self.teardown(s, reason) for s in sessions))

    async def wait_idle(self) -> None:
        await self._idle.wait()
