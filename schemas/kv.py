"""A typed view of one JetStream key-value bucket, changed only by compare-and-set."""

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from schemas.codec import decoder_for, encode
from schemas.errors import CorruptEntry, KeyExists, RevisionMismatch
from schemas.js_retry import DEFAULT_BUDGET_S, retry_transient

T = TypeVar("T")
Entry = KeyValue.Entry

#: Read attempts made through the short-timeout context before the normal one.
QUICK_READ_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class KvEntry(Generic[T]):
    """A decoded value and the revision to pass back to :meth:`TypedKv.update`."""

    key: str
    value: T
    revision: int


class TypedKv(Generic[T]):
    """Get / create / update-with-revision over a bucket whose values are one type."""

    def __init__(
        self, kv: KeyValue, bucket: str, type_: type[T] | Any, *, reads: KeyValue | None = None
    ) -> None:
        self._kv = kv
        #: The same bucket for reads, through a context with a shorter timeout per attempt.
        self._reads = reads or kv
        self.bucket = bucket
        self._decoder = decoder_for(type_)

    async def get(self, key: str, *, budget_s: float = DEFAULT_BUDGET_S) -> KvEntry[T] | None:
        """The current value, or ``None`` if the key is absent or deleted. Retried through a
        leader election of the bucket for up to ``budget_s``; then the last error."""
        attempts = 0

        def read() -> Awaitable[Entry]:
            # The first attempts wait briefly (a leaderless bucket does not answer at all);
            # later ones as long as any JetStream request, so a bus merely slow under load
            # (answers in 2 to 5 s) is not refused every time.
            nonlocal attempts
            attempts += 1
            return (self._reads if attempts <= QUICK_READ_ATTEMPTS else self._kv).get(key)

        try:
            # A read is idempotent: retried through a leader election of the bucket.
            entry = await retry_transient(
                read, what=f"kv:{self.bucket}", idempotent=True, budget_s=budget_s
            )
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        try:
            value = self._decoder.decode(entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CorruptEntry(self.bucket, key, str(exc)) from None
        return KvEntry(key, value, int(entry.revision))

    async def create(self, key: str, value: msgspec.Struct) -> int:
        """Write a new key; raises :class:`KeyExists` if it already has a value."""
        data = encode(value)
        try:
            rev = await retry_transient(
                lambda: self._kv.create(key, data), what=f"kv:{self.bucket}", idempotent=True
            )
            return int(rev)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise KeyExists(self.bucket, key) from None

    async def update(self, key: str, value: msgspec.Struct, revision: int) -> int:
        """Compare-and-set: write only if the key is still at ``revision``.

        Raises :class:`RevisionMismatch` when someone else changed it first; re-read and
        retry the decision.
        """
        data = encode(value)
        try:
            rev = await retry_transient(
                lambda: self._kv.update(key, data, last=revision),
                what=f"kv:{self.bucket}",
                idempotent=True,  # a CAS cannot apply twice: a replay gets RevisionMismatch
            )
            return int(rev)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise RevisionMismatch(self.bucket, key, revision) from None

    async def put(self, key: str, value: msgspec.Struct) -> int:
        """Write unconditionally (for values with one writer, such as heartbeats)."""
        data = encode(value)
        rev = await retry_transient(
            lambda: self._kv.put(key, data), what=f"kv:{self.bucket}", idempotent=True
        )
        return int(rev)

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete (optionally only if still at ``revision``)."""
        try:
            await self._kv.delete(key, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise RevisionMismatch(self.bucket, key, revision or 0) from None

    async def keys(self) -> list[str]:
        try:
            return list(await self._kv.keys())
        except nats.js.errors.NoKeysError:
            return []
