"""Operator endpoints (conversation registry) and the development token endpoint."""

from typing import Annotated

from fastapi import APIRouter, Query

from gateway import state_machine as sm
from gateway.api_models import (
    ID,
    ConversationBody,
    ConversationView,
    DevToken,
    DevTokenRequest,
    ErrorResponse,
    IceServers,
)
from gateway.context import Caller, Ctx, Operator
from gateway.errors import CallError
from gateway.ice import ice_servers
from gateway.validation import check_display_name, check_lang
from schemas.call_state import ConversationMember, ConversationRecord
from schemas.ids import check_id

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 503)
}

router = APIRouter(prefix="/api", responses=ERRORS)


@router.put(
    "/admin/conversations/{conversation_id}",
    tags=["operator"],
    summary="Create or replace a conversation (operator token)",
)
async def put_conversation(
    conversation_id: str, body: ConversationBody, ctx: Ctx, _: Operator
) -> ConversationView:
    try:
        check_id(conversation_id, "conversation_id")
    except ValueError as exc:
        raise CallError("bad_request", str(exc)) from None
    record = ConversationRecord(
        conversation_id=conversation_id,
        type=body.type,
        members=[ConversationMember(user_id=m.user_id, role=m.role) for m in body.members],
        title=body.title,
    )
    await ctx.conversations.put(record)
    return ConversationView(conversation_id=conversation_id, **body.model_dump())


@router.get(
    "/admin/conversations/{conversation_id}",
    tags=["operator"],
    summary="Read a conversation (operator token)",
)
async def get_conversation(conversation_id: str, ctx: Ctx, _: Operator) -> ConversationView:
    record = await ctx.conversations.get(conversation_id)
    return ConversationView.model_validate(
        {
            "conversation_id": record.conversation_id,
            "type": record.type,
            "title": record.title,
            "members": [{"user_id": m.user_id, "role": m.role} for m in record.members],
        }
    )


@router.post(
    "/dev/token",
    tags=["development"],
    summary="Log in as a named user (only when DEV_TOKENS_ENABLED)",
)
async def dev_token(body: DevTokenRequest, ctx: Ctx) -> DevToken:
    if not ctx.settings.dev_tokens_enabled:
        raise CallError("not_found", "dev tokens are disabled")
    name = check_display_name(body.display_name) if body.display_name.strip() else body.user_id
    token = ctx.tokens.issue_dev_token(body.user_id, name, check_lang(body.language))
    return DevToken(token=token, user_id=body.user_id)


@router.get(
    "/ice-servers",
    tags=["calls"],
    summary="STUN and TURN servers with fresh, short-lived credentials for a call you are in",
)
async def get_ice_servers(
    ctx: Ctx, who: Caller, call_id: Annotated[str, Query(alias="callId", pattern=ID)]
) -> IceServers:
    state = await ctx.calls.view(who, call_id)
    own = sm.participant_of(state, who.principal_id)
    if own is None or state.status == "ended":
        raise CallError("not_in_call", "you are not in this call")
    return IceServers.model_validate(
        ice_servers(
            ctx.settings,
            call_id=call_id,
            participant_id=own.participant_id,
            not_after=who.expires_at,
        )
    )
