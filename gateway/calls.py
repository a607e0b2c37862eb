"""Call operations shared by REST and Socket.IO: who may do what, then a CAS transition.

Each operation returns the written and published :class:`Outcome`. ``written`` (optional)
runs after the write and before publishing: the Socket.IO layer binds its socket to the
participant there, so the notices projected from these events already reach it.
"""

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway import migration
from gateway import state_machine as sm
from gateway.call_store import CallStore, Written
from gateway.conversations import Conversations, is_moderator, may_take_part
from gateway.errors import CallError
from gateway.settings import GatewaySettings
from gateway.state_machine import Outcome
from gateway.timers import CallMirror
from gateway.tokens import Principal
from schemas.call_events import CallMode, MediaKind
from schemas.call_state import CallParticipantState, CallState
from schemas.ids import new_id


def new_resume_token() -> str:
    return secrets.token_urlsafe(24)


def new_participant_id() -> str:
    return f"p-{new_id()[:16]}"


@dataclass
class Joined:
    """A written join: the outcome, and the secret the participant resumes with."""

    outcome: Outcome
    resume_token: str

    @property
    def participant_id(self) -> str:
        return str(self.outcome.result["participantId"])


JoinedHook = Callable[[Joined], None]
"""Runs after a join or start is written, before its events are published."""


class CallService:
    def __init__(
        self,
        settings: GatewaySettings,
        store: CallStore,
        conversations: Conversations,
        mirror: CallMirror | None,
        admit_guest: Callable[[Principal], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.conversations = conversations
        self.mirror = mirror
        #: Checks a guest is still welcome (its share link not revoked) before it enters.
        self.admit_guest = admit_guest

    def timers(self) -> sm.Timers:
        s = self.settings
        return sm.Timers(
            ring_timeout_s=s.call_ring_timeout_s,
            heartbeat_timeout_s=s.call_heartbeat_timeout_s,
            reconnect_grace_s=s.call_reconnect_grace_s,
            max_duration_s=s.call_max_duration_s,
        )

    # --- reading -------------------------------------------------------------------------
    async def view(self, who: Principal, call_id: str) -> CallState:
        state = await self.store.require(call_id)
        conversation = await self.conversations.get(state.conversation_id)
        if not may_take_part(conversation, who):
            raise CallError("not_found", "no such call")
        return state

    async def active_call(self, who: Principal, conversation_id: str) -> CallState | None:
        await self.conversations.membership(conversation_id, who)
        return await self.store.active_call_of(conversation_id)

    async def current(self, call_id: str, *, fresh: bool = False) -> CallState:
        """The call's state from the local mirror, or from KV when asked or unknown."""
        if not fresh and self.mirror is not None:
            state = self.mirror.get(call_id)
            if state is not None:
                return state
        return await self.store.require(call_id)

    # --- writing -------------------------------------------------------------------------
    async def start(
        self,
        who: Principal,
        conversation_id: str,
        media: MediaKind,
        *,
        bind: JoinedHook | None = None,
        languages: sm.Languages = sm.NO_LANGUAGES,
    ) -> Joined:
        if who.kind != "user":
            raise CallError("forbidden", "guests cannot start calls")
        conversation = await self.conversations.membership(conversation_id, who)
        token = new_resume_token()
        outcome = sm.start_call(
            call_id=f"call-{new_id()[:20]}",
            conversation=conversation,
            initiator=who,
            participant_id=new_participant_id(),
            media=media,
            now=time.time(),
            timers=self.timers(),
            resume_token=token,
            languages=languages,
        )
        joined = Joined(outcome, token)
        await self.store.create(outcome, written=_with_token(bind, joined))
        return joined

    async def join(
        self,
        who: Principal,
        call_id: str,
        resume_token: str | None = None,
        *,
        bind: JoinedHook | None = None,
        languages: sm.Languages = sm.NO_LANGUAGES,
    ) -> Joined:
        state = await self.store.require(call_id)
        if who.kind == "guest" and self.admit_guest is not None:
            await self.admit_guest(who)
        new_token = new_resume_token()
        joined = Joined(sm.Outcome(state), new_token)
        hook = _with_token(bind, joined)
        if resume_token:
            outcome = await self.store.apply(
                call_id,
                lambda s: _own_resume(s, who, resume_token, new_token, languages),
                written=hook,
            )
            assert outcome is not None
            joined.outcome = outcome
            return joined
        conversation = await self.conversations.get(state.conversation_id)
        allowed = may_take_part(conversation, who)
        if not allowed:
            raise CallError("forbidden", "not a member of this conversation")
        participant_id = new_participant_id()
        outcome = await self.store.apply(
            call_id,
            lambda s: sm.join(
                s,
                who,
                participant_id=participant_id,
                now=time.time(),
                resume_token=new_token,
                max_participants=self.settings.call_max_participants,
                may_join=allowed,
                languages=languages,
            ),
            written=hook,
        )
        assert outcome is not None
        joined.outcome = outcome
        return joined

    async def decline(self, who: Principal, call_id: str) -> Outcome:
        if who.kind != "user":
            raise CallError("forbidden", "guests are never rung")
        outcome = await self.store.apply(
            call_id, lambda s: sm.decline(s, who.principal_id, now=time.time())
        )
        assert outcome is not None
        return outcome

    async def leave(
        self,
        who: Principal,
        call_id: str,
        participant_id: str | None = None,
        *,
        written: Written | None = None,
    ) -> Outcome:
        """Leave (own participant), or remove someone else when the role allows it."""
        state = await self.store.require(call_id)
        own = sm.participant_of(state, who.principal_id)
        if participant_id is None or (own is not None and participant_id == own.participant_id):
            if own is None:
                raise CallError("not_in_call", "you are not in this call")
            target, reason, by = own.participant_id, "left", own.participant_id
        else:
            conversation = await self.conversations.get(state.conversation_id)
            allowed = is_moderator(conversation, who) or (
                who.kind == "user" and state.initiator_user_id == who.principal_id
            )
            if not allowed:
                raise CallError("forbidden", "only the initiator or a moderator may remove people")
            target, reason = participant_id, "removed"
            by = own.participant_id if own is not None else who.principal_id
        outcome = await self.store.apply(
            call_id,
            lambda s: sm.leave(s, target, reason, now=time.time(), by=by),  # type: ignore[arg-type]
            written=written,
        )
        assert outcome is not None
        return outcome

    async def end(self, who: Principal, call_id: str) -> Outcome:
        state = await self.store.require(call_id)
        conversation = await self.conversations.get(state.conversation_id)
        if not may_take_part(conversation, who):
            raise CallError("not_found", "no such call")
        own = sm.participant_of(state, who.principal_id)
        allowed = (
            is_moderator(conversation, who)
            or (who.kind == "user" and state.initiator_user_id == who.principal_id)
            # In a DIRECT call either person hanging up ends it (a leave would, too).
            or (state.conversation_type == "DIRECT" and own is not None)
        )
        if not allowed:
            raise CallError("forbidden", "only the initiator or a moderator may end the call")
        by = own.participant_id if own is not None else who.principal_id
        outcome = await self.store.apply(
            call_id, lambda s: sm.end(s, "completed", now=time.time(), by=by)
        )
        assert outcome is not None
        return outcome

    async def set_media(
        self, call_id: str, participant_id: str, *, audio: bool | None, video: bool | None
    ) -> Outcome | None:
        return await self.store.apply(
            call_id,
            lambda s: sm.set_media(s, participant_id, audio=audio, video=video, now=time.time()),
        )

    async def set_transcription(
        self, call_id: str, participant_id: str, enabled: bool
    ) -> Outcome | None:
        """Turn the call's transcription on or off (``None``: it already was)."""
        return await self.store.apply(
            call_id,
            lambda s: sm.set_transcription(s, participant_id, enabled, now=time.time()),
        )

    async def set_language(
        self, call_id: str, participant_id: str, languages: sm.Languages
    ) -> Outcome | None:
        """Change what a participant speaks and reads (``None``: no change)."""
        return await self.store.apply(
            call_id, lambda s: sm.set_language(s, participant_id, languages, now=time.time())
        )

    async def set_captions_uplink(
        self, call_id: str, participant_id: str, enabled: bool
    ) -> Outcome | None:
        """Ask for (or give up) an audio-only captions uplink (``None``: no change)."""
        return await self.store.apply(
            call_id,
            lambda s: sm.set_captions_uplink(s, participant_id, enabled, now=time.time()),
        )

    async def report_media(
        self,
        call_id: str,
        participant_id: str,
        *,
        epoch: int,
        mode: CallMode,
        ok: bool,
        reason: str = "",
        peer_id: str | None = None,
        max_gap_ms: float = 0.0,
    ) -> Outcome | None:
        """Record a client's report on a media path (``None``: stale or repeated)."""
        return await self.store.apply(
            call_id,
            lambda s: migration.report(
                s,
                participant_id,
                epoch=epoch,
                mode=mode,
                ok=ok,
                now=time.time(),
                reason=reason,
                peer_id=peer_id,
                max_gap_ms=max_gap_ms,
            ),
        )

    async def disconnect(
        self, call_id: str, participant_id: str, resume_hash: str
    ) -> Outcome | None:
        """The socket bound to ``participant_id`` is gone (unless it was rebound since)."""

        def transition(s: CallState) -> Outcome | None:
            p = sm.find_participant(s, participant_id)
            if p is None or p.resume_token_sha256 != resume_hash:
                return None
            return sm.disconnect(s, participant_id, now=time.time())

        try:
            return await self.store.apply(call_id, transition)
        except CallError:
            return None


def _with_token(bind: JoinedHook | None, joined: Joined) -> Written | None:
    """The store's hook for a join: hands the socket layer the written join (with the
    resume token the participant will use)."""
    if bind is None:
        return None

    def hook(outcome: Outcome) -> None:
        joined.outcome = outcome
        bind(joined)

    return hook


def _own_resume(
    s: CallState, who: Principal, token: str, new_token: str, languages: sm.Languages
) -> Outcome:
    digest = sm.hash_token(token)
    mine: CallParticipantState | None = next(
        (p for p in s.participants if p.resume_token_sha256 == digest), None
    )
    if mine is None or mine.principal_id != who.principal_id:
        raise CallError("forbidden", "the resume token is not valid for this call")
    return sm.resume(s, token, now=time.time(), new_token=new_token, languages=languages)
