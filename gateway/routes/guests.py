"""Share links for guests (members create and revoke; guests redeem for a guest token)."""

from fastapi import APIRouter, Request

from gateway.api_models import (
    CreateShareLink,
    ErrorResponse,
    GuestToken,
    RedeemLink,
    ShareLinkView,
)
from gateway.context import Caller, Ctx

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 429, 503)
}

router = APIRouter(prefix="/api", tags=["guests"], responses=ERRORS)


@router.post(
    "/conversations/{conversation_id}/share-links",
    status_code=201,
    summary="Create a guest share link to a GROUP conversation",
)
async def create_link(
    conversation_id: str, body: CreateShareLink, ctx: Ctx, who: Caller
) -> ShareLinkView:
    ctx.limiter.check(who.principal_id, "rest:share-link")
    issued = await ctx.guests.create_link(who, conversation_id, body.ttl_s, body.max_uses)
    return ShareLinkView(
        link_id=issued.record.link_id,
        conversation_id=conversation_id,
        token=issued.token,
        url=issued.url,
        expires_at=issued.record.expires_at,
        max_uses=issued.record.max_uses,
    )


@router.delete(
    "/share-links/{link_id}", status_code=204, summary="Revoke a share link (creator or moderator)"
)
async def revoke_link(link_id: str, ctx: Ctx, who: Caller) -> None:
    await ctx.guests.revoke(who, link_id)


@router.post(
    "/guests", status_code=201, summary="Redeem a share link: a guest token for its conversation"
)
async def redeem(body: RedeemLink, ctx: Ctx, request: Request) -> GuestToken:
    # No principal yet: limit by client address (behind TRUSTED_PROXIES, the client's own,
    # not the proxy's), so a leaked link cannot be hammered.
    peer = request.client.host if request.client else None
    # Every X-Forwarded-For line, in order: a proxy that appends a line of its own (rather
    # than joining with a comma) must not let the client's forged first line decide.
    forwarded = ", ".join(request.headers.getlist("x-forwarded-for")) or None
    client = ctx.addresses.bucket(peer, forwarded)
    ctx.limiter.check(f"addr:{client}", "rest:redeem")
    token, principal = await ctx.guests.redeem(body.link, body.display_name, body.language)
    assert principal.conversation_id is not None
    return GuestToken(
        token=token, guest_id=principal.principal_id, conversation_id=principal.conversation_id
    )
