"""``GET /api/conversations``: the signed-in member's conversations, each with its live call."""

import asyncio
from typing import Literal

from fastapi import APIRouter

from gateway.api_models import ErrorResponse, Model
from gateway.context import Caller, Ctx
from gateway.conversations import member_of
from gateway.errors import CallError
from schemas.call_state import ConversationRecord

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 429, 503)
}

router = APIRouter(prefix="/api", tags=["conversations"], responses=ERRORS)


class MemberView(Model):
    user_id: str
    role: Literal["member", "moderator", "admin"]


class ActiveCallSummary(Model):
    call_id: str
    status: Literal["initiated", "ringing", "active", "reconnecting", "ended"]
    participant_count: int


class ConversationSummary(Model):
    conversation_id: str
    type: Literal["DIRECT", "GROUP"]
    title: str
    members: list[MemberView]
    #: The caller's own role (decides who may end a call for everyone, remove people).
    my_role: Literal["member", "moderator", "admin"]
    active_call: ActiveCallSummary | None = None


class ConversationList(Model):
    conversations: list[ConversationSummary]


@router.get("/conversations", summary="Your conversations, with the call in progress in each")
async def list_conversations(ctx: Ctx, who: Caller) -> ConversationList:
    if who.kind != "user" or who.user_id is None:
        raise CallError("forbidden", "guests have no conversation list")
    ctx.limiter.check(who.principal_id, "rest:conversations")
    records = await ctx.conversations.of_member(who.user_id)
    summaries = await asyncio.gather(*(_summary(ctx, r, who.user_id) for r in records))
    return ConversationList(conversations=list(summaries))


async def _summary(ctx: Ctx, record: ConversationRecord, user_id: str) -> ConversationSummary:
    call = await ctx.calls.store.active_call_of(record.conversation_id)
    me = member_of(record, user_id)
    assert me is not None
    return ConversationSummary(
        conversation_id=record.conversation_id,
        type=record.type,
        title=record.title,
        members=[MemberView(user_id=m.user_id, role=m.role) for m in record.members],
        my_role=me.role,
        active_call=None
        if call is None
        else ActiveCallSummary(
            call_id=call.call_id, status=call.status, participant_count=len(call.participants)
        ),
    )
