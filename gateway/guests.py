"""Anonymous guests: share links to a GROUP conversation, redeemed for a guest token.

A link is a signed, expiring token naming a record in KV ``share_links``; the record makes
it revocable and counts its uses by compare-and-set, so ``max_uses`` holds across gateways.
A DIRECT conversation never admits a guest.
"""

import time
from dataclasses import dataclass

import msgspec

from gateway.conversations import Conversations, is_moderator
from gateway.errors import CallError
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, TokenService
from gateway.validation import check_display_name, check_lang, valid_id
from schemas.call_state import ShareLinkRecord
from schemas.errors import RevisionMismatch
from schemas.ids import new_id
from schemas.kv import TypedKv
from schemas.logs import get_logger

log = get_logger("gateway.guests")

#: Compare-and-set retries on one share link before giving up (``unavailable``).
MAX_CAS_ATTEMPTS = 50


@dataclass(frozen=True, slots=True)
class IssuedLink:
    record: ShareLinkRecord
    token: str
    url: str


class Guests:
    def __init__(
        self,
        settings: GatewaySettings,
        kv: TypedKv[ShareLinkRecord],
        conversations: Conversations,
        tokens: TokenService,
    ) -> None:
        self._settings = settings
        self._kv = kv
        self._conversations = conversations
        self._tokens = tokens

    async def create_link(
        self, who: Principal, conversation_id: str, ttl_s: float | None, max_uses: int | None
    ) -> IssuedLink:
        if who.kind != "user":
            raise CallError("forbidden", "guests cannot create share links")
        record = await self._conversations.membership(conversation_id, who)
        if record.type != "GROUP":
            raise CallError("forbidden", "a DIRECT conversation never admits a guest")
        ttl = ttl_s if ttl_s is not None else self._settings.share_link_default_ttl_s
        if not 0 < ttl <= self._settings.share_link_max_ttl_s:
            raise CallError("bad_request", "ttl_s is out of range")
        if max_uses is not None and max_uses < 1:
            raise CallError("bad_request", "max_uses must be at least 1")
        now = time.time()
        link = ShareLinkRecord(
            link_id=f"lnk-{new_id()[:20]}",
            conversation_id=conversation_id,
            created_by=who.principal_id,
            created_at=now,
            expires_at=now + ttl,
            max_uses=max_uses,
        )
        await self._kv.create(link.link_id, link)
        token = self._tokens.issue_link_token(link.link_id, conversation_id, link.expires_at)
        url = f"{self._settings.public_base_url.rstrip('/')}/join?link={token}"
        log.info("guests.link_created", link_id=link.link_id, conversation_id=conversation_id)
        return IssuedLink(link, token, url)

    async def revoke(self, who: Principal, link_id: str) -> None:
        if who.kind != "user":
            raise CallError("forbidden", "guests cannot revoke share links")
        entry = await self._kv.get(valid_id(link_id, "link_id"))
        if entry is None:
            raise CallError("not_found", "no such share link")
        link = entry.value
        conversation = await self._conversations.membership(link.conversation_id, who)
        if link.created_by != who.principal_id and not is_moderator(conversation, who):
            raise CallError("forbidden", "only its creator or a moderator may revoke a link")
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                await self._kv.update(
                    link_id, msgspec.structs.replace(link, revoked=True), entry.revision
                )
                break
            except RevisionMismatch:
                fresh = await self._kv.get(link_id)
                if fresh is None:
                    return
                entry, link = fresh, fresh.value
        else:
            raise CallError("unavailable", "the share link is changing too fast; try again")
        log.info("guests.link_revoked", link_id=link_id)

    async def redeem(
        self, link_token: str, display_name: str, language: str
    ) -> tuple[str, Principal]:
        """A guest token for the link's conversation; counts one use."""
        name = check_display_name(display_name)
        lang = check_lang(language)
        link_id, conversation_id = self._tokens.verify_link_token(link_token)
        conversation = await self._conversations.get(conversation_id)
        if conversation.type != "GROUP":
            raise CallError("forbidden", "a DIRECT conversation never admits a guest")
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self._kv.get(link_id)
            if entry is None:
                raise CallError("not_found", "no such share link")
            link = entry.value
            if link.conversation_id != conversation_id:
                raise CallError("unauthorized", "the share link does not match its record")
            if link.revoked:
                raise CallError("forbidden", "the share link was revoked")
            if link.expires_at <= time.time():
                raise CallError("unauthorized", "the share link has expired")
            if link.max_uses is not None and link.uses >= link.max_uses:
                raise CallError("forbidden", "the share link has been used up")
            try:
                await self._kv.update(
                    link_id, msgspec.structs.replace(link, uses=link.uses + 1), entry.revision
                )
                break
            except RevisionMismatch:
                continue
        else:
            raise CallError("unavailable", "the share link is busy; try again")
        token, principal = self._tokens.issue_guest_token(conversation_id, name, lang, link_id)
        log.info("guests.link_redeemed", link_id=link_id, guest_id=principal.principal_id)
        return token, principal

    async def admit(self, who: Principal) -> None:
        """Refuse a guest whose share link was revoked (or removed) since it was redeemed.

        Checked when a guest enters a call, so revoking a link also shuts out the guests
        who came through it, not only those still to come.
        """
        if who.kind != "guest" or who.link_id is None:
            return
        entry = await self._kv.get(who.link_id)
        if entry is None or entry.value.revoked:
            raise CallError("forbidden", "the share link of this guest was revoked")
