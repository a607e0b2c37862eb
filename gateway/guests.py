"""Anonymous guests: share links to a GROUP conversation, redeemed for a guest token.

A link is a signed, expiring token naming a record in KV ``share_links``; the record makes
it revocable and counts its uses by compare-and-set, so ``max_uses`` holds across gateways.
A DIRECT conversation never admits a guest.

Revoking a link shuts the door behind its guests too: the record lists the guests it
admitted, and they are removed from the conversation's call at once (reason ``removed``);
a guest token of a revoked link can no longer join, and every gateway shows such a guest's
live sockets out (:mod:`gateway.sockets.authority`).
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from gateway.conversations import Conversations, is_moderator
from gateway.errors import CallError
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, TokenService, new_guest_id
from gateway.validation import check_caption_language, check_display_name, valid_id
from schemas.call_state import ShareLinkRecord
from schemas.errors import RevisionMismatch
from schemas.ids import new_id
from schemas.kv import TypedKv
from schemas.logs import get_logger

log = get_logger("gateway.guests")

#: Compare-and-set retries on one share link before giving up (``unavailable``).
MAX_CAS_ATTEMPTS = 50
#: Guests a link record remembers (for removal on revocation); beyond it the gateways'
#: periodic socket re-check removes them.
MAX_RECORDED_GUESTS = 1000

RemoveGuests = Callable[[str, set[str], str], Awaitable[int]]
"""``remove(conversation_id, guest_ids, by)``: remove these guests from the conversation's
active call; returns how many were removed."""


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
        remove_guests: RemoveGuests | None = None,
    ) -> None:
        self._settings = settings
        self._kv = kv
        self._conversations = conversations
        self._tokens = tokens
        #: Set once the call service exists (it needs :meth:`admit`, and this needs it).
        self.remove_guests = remove_guests

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
        removed = 0
        if self.remove_guests is not None and link.guest_ids:
            removed = await self.remove_guests(
                link.conversation_id, set(link.guest_ids), who.principal_id
            )
        log.info("guests.link_revoked", link_id=link_id, guests_removed=removed)

    async def redeem(
        self, link_token: str, display_name: str, language: str
    ) -> tuple[str, Principal]:
        """A guest token for the link's conversation; counts one use."""
        name = check_display_name(display_name)
        lang = check_caption_language(language)
        link_id, conversation_id = self._tokens.verify_link_token(link_token)
        conversation = await self._conversations.get(conversation_id)
        if conversation.type != "GROUP":
            raise CallError("forbidden", "a DIRECT conversation never admits a guest")
        guest_id = new_guest_id()
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
            guest_ids = link.guest_ids
            if len(guest_ids) < MAX_RECORDED_GUESTS:
                guest_ids = (*guest_ids, guest_id)
            try:
                await self._kv.update(
                    link_id,
                    msgspec.structs.replace(link, uses=link.uses + 1, guest_ids=guest_ids),
                    entry.revision,
                )
                break
            except RevisionMismatch:
                continue
        else:
            raise CallError("unavailable", "the share link is busy; try again")
        token, principal = self._tokens.issue_guest_token(
            conversation_id, name, lang, link_id, guest_id=guest_id
        )
        log.info("guests.link_redeemed", link_id=link_id, guest_id=principal.principal_id)
        return token, principal

    async def admit(self, who: Principal) -> None:
        """Refuse a guest whose share link was revoked (or removed) since it was redeemed.

        Checked when a guest enters a call, so revoking a link also shuts out the guests
        who came through it, not only those still to come.
        """
        if who.kind != "guest" or who.link_id is None:
            return
        if await self.link_revoked(who.link_id):
            raise CallError("forbidden", "the share link of this guest was revoked")

    async def link_revoked(self, link_id: str) -> bool:
        """Whether a share link was revoked (or its record removed)."""
        entry = await self._kv.get(link_id)
        return entry is None or entry.value.revoked
