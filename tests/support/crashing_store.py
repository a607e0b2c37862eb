"""A call store whose writer "dies" right after each compare-and-set (for fault tests)."""

from gateway.call_store import CallStore
from schemas.call_state import OutboxEntry


class CrashingStore(CallStore):
    """A writer that dies right after its compare-and-set: nothing of the change is
    published (recovery, with its stream check, still works)."""

    async def flush(self, call_id: str, outbox: list[OutboxEntry], *, check_stream: bool) -> int:
        if not check_stream:
            return 0
        return await super().flush(call_id, outbox, check_stream=check_stream)
