"""A stand-in for a delivered JetStream message: what the archive's writer reads of one."""

from datetime import datetime
from types import SimpleNamespace


class Delivered:
    """A message's stream sequence, stream time and payload (and a no-op keep-alive)."""

    def __init__(self, stream_seq: int, data: bytes, at: datetime) -> None:
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=stream_seq), timestamp=at)
        self.data = data

    async def in_progress(self) -> None:
        return None
