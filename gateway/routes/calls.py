"""``/api/calls``: start, read, join, leave or remove, end; the active call of a conversation."""

from fastapi import APIRouter, Response

from gateway import state_machine as sm
from gateway.api_models import CallView, ErrorResponse, JoinedCall, StartCall
from gateway.calls import Joined
from gateway.context import Caller, Ctx
from gateway.errors import CallError
from schemas.call_state import CallState

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422, 429, 503)
}

router = APIRouter(prefix="/api", tags=["calls"], responses=ERRORS)


def _view(state: CallState) -> CallView:
    return CallView.model_validate(sm.call_view(state))


def _joined(joined: Joined) -> JoinedCall:
    return JoinedCall(
        call=_view(joined.outcome.state),
        participant_id=joined.participant_id,
        resume_token=joined.resume_token,
    )


@router.post("/calls", status_code=201, summary="Start a call in a conversation (rings the others)")
async def start_call(body: StartCall, ctx: Ctx, who: Caller) -> JoinedCall:
    ctx.limiter.check(who.principal_id, "rest:start")
    return _joined(await ctx.calls.start(who, body.conversation_id, body.media))


@router.post(
    "/calls/{call_id}/participants",
    status_code=201,
    summary="Join a call (accepts it if you were being rung); bind a socket with call:join",
)
async def join_call(call_id: str, ctx: Ctx, who: Caller) -> JoinedCall:
    ctx.limiter.check(who.principal_id, "rest:join")
    return _joined(await ctx.calls.join(who, call_id))


@router.delete(
    "/calls/{call_id}/participants/{participant_id}",
    summary="Leave a call, or remove someone (initiator or moderator)",
)
async def leave_call(call_id: str, participant_id: str, ctx: Ctx, who: Caller) -> CallView:
    ctx.limiter.check(who.principal_id, "rest:leave")
    return _view((await ctx.calls.leave(who, call_id, participant_id)).state)


@router.delete("/calls/{call_id}", summary="End the call for everyone (initiator or moderator)")
async def end_call(call_id: str, ctx: Ctx, who: Caller) -> CallView:
    ctx.limiter.check(who.principal_id, "rest:end")
    return _view((await ctx.calls.end(who, call_id)).state)


@router.get(
    "/conversations/{conversation_id}/active-call",
    summary="The conversation's active call (404 if none)",
)
async def active_call(conversation_id: str, ctx: Ctx, who: Caller, response: Response) -> CallView:
    state = await ctx.calls.active_call(who, conversation_id)
    if state is None:
        raise CallError("not_found", "no active call in this conversation")
    return _view(state)
