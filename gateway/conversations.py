"""The conversation registry: id, DIRECT or GROUP, members with roles (KV ``conversations``).

The messenger that embeds us owns conversations; this is the small copy we need to decide
who may call, be rung, join, end and remove. The operator endpoint and seed data fill it.
"""

import asyncio
import json
from pathlib import Path

import msgspec

from gateway.errors import CallError
from gateway.tokens import Principal
from gateway.validation import valid_id
from schemas.call_state import ConversationMember, ConversationRecord
from schemas.errors import CorruptEntry, KeyExists, RevisionMismatch
from schemas.kv import TypedKv
from schemas.logs import get_logger

log = get_logger("gateway.conversations")

MAX_DIRECT_MEMBERS = 2
MAX_GROUP_MEMBERS = 500
MAX_CAS_ATTEMPTS = 50
#: ``GET /api/conversations`` answers at most this many, after reading at most MAX_SCANNED.
MAX_LISTED = 200
MAX_SCANNED = 5000
SCAN_BATCH = 32


def check_record(record: ConversationRecord) -> ConversationRecord:
    """Refuse records that break the rules (DIRECT = exactly two, members unique)."""
    valid_id(record.conversation_id, "conversation_id")
    ids = [valid_id(m.user_id, "user_id") for m in record.members]
    if len(set(ids)) != len(ids):
        raise CallError("bad_request", "members must be unique")
    if record.type == "DIRECT" and len(ids) != MAX_DIRECT_MEMBERS:
        raise CallError("bad_request", "a DIRECT conversation has exactly two members")
    if record.type == "GROUP" and not 1 <= len(ids) <= MAX_GROUP_MEMBERS:
        raise CallError("bad_request", f"a GROUP has 1 to {MAX_GROUP_MEMBERS} members")
    return record


class Conversations:
    """Reads and writes the registry."""

    def __init__(self, kv: TypedKv[ConversationRecord]) -> None:
        self._kv = kv

    async def get(self, conversation_id: str) -> ConversationRecord:
        entry = await self._kv.get(valid_id(conversation_id, "conversation_id"))
        if entry is None:
            raise CallError("not_found", "no such conversation")
        return entry.value

    async def put(self, record: ConversationRecord) -> None:
        """Create or replace (operator endpoint)."""
        check_record(record)
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self._kv.get(record.conversation_id)
            try:
                if entry is None:
                    await self._kv.create(record.conversation_id, record)
                else:
                    await self._kv.update(record.conversation_id, record, entry.revision)
                return
            except (KeyExists, RevisionMismatch):  # lost a race: re-read and retry
                continue
        raise CallError("unavailable", "the conversation is changing too fast; try again")

    async def seed(self, source: str) -> int:
        """Create the conversations of a JSON file or inline JSON list that do not exist."""
        text = source.strip()
        if not text.startswith("["):
            text = await asyncio.to_thread(Path(text).read_text)
        records = msgspec.convert(json.loads(text), list[ConversationRecord])
        created = 0
        for record in records:
            check_record(record)
            try:
                await self._kv.create(record.conversation_id, record)
                created += 1
            except KeyExists:
                continue
        log.info("conversations.seeded", created=created, total=len(records))
        return created

    async def of_member(self, user_id: str, limit: int = MAX_LISTED) -> list[ConversationRecord]:
        """The conversations ``user_id`` is a member of, by title, at most ``limit``.

        The registry has no per-member index, so this reads every record: right for the
        embedded stack and small deployments; the messenger, which owns the conversations,
        normally opens the call page for one conversation it already knows.
        """
        keys = sorted(await self._kv.keys())[:MAX_SCANNED]
        found: list[ConversationRecord] = []
        for start in range(0, len(keys), SCAN_BATCH):
            batch = keys[start : start + SCAN_BATCH]
            entries = await asyncio.gather(*(self._get_quietly(k) for k in batch))
            found.extend(r for r in entries if r is not None and member_of(r, user_id) is not None)
        found.sort(key=lambda r: (r.title or r.conversation_id).lower())
        return found[:limit]

    async def _get_quietly(self, key: str) -> ConversationRecord | None:
        try:
            entry = await self._kv.get(key)
        except CorruptEntry:
            log.warning("conversations.corrupt_entry", conversation_id=key)
            return None
        return entry.value if entry is not None else None

    async def membership(self, conversation_id: str, who: Principal) -> ConversationRecord:
        """The conversation, if ``who`` may take part (member, or a guest of this GROUP)."""
        record = await self.get(conversation_id)
        if not may_take_part(record, who):
            raise CallError("forbidden", "not a member of this conversation")
        return record


def member_of(record: ConversationRecord, user_id: str | None) -> ConversationMember | None:
    for m in record.members:
        if m.user_id == user_id:
            return m
    return None


def may_take_part(record: ConversationRecord, who: Principal) -> bool:
    if who.kind == "guest":
        return record.type == "GROUP" and who.conversation_id == record.conversation_id
    return member_of(record, who.user_id) is not None


def is_moderator(record: ConversationRecord, who: Principal) -> bool:
    m = member_of(record, who.user_id)
    return m is not None and m.role in ("moderator", "admin")
