"""Settings of the archive process (and the MongoDB half of the gateway's)."""

from typing import Annotated, ClassVar

import msgspec

from schemas import subjects
from schemas.settings import PositiveFloat, ServiceSettings

DatabaseName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,63}$")]
DurableName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
BatchSize = Annotated[int, msgspec.Meta(ge=1, le=1024)]


class ArchiveSettings(ServiceSettings, frozen=True, kw_only=True):
    """``MONGO_URL`` (a secret: it may hold a password) and where the archive keeps its place."""

    secret_fields: ClassVar[frozenset[str]] = frozenset(
        {"nats_password", "nats_token", "mongo_url"}
    )

    #: ``mongodb://host:27017`` (nx-27017 in the embedded stack; a replica set in compose).
    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_database: DatabaseName = "meeshy_calls"
    #: Give up (exit non-zero) if MongoDB does not answer within this long at start.
    mongo_connect_deadline_s: PositiveFloat = 30.0
    #: The durable consumers' name prefix: instances sharing it share the work.
    archive_durable: DurableName = subjects.ARCHIVE_DURABLE
    #: A missing revision of a live call is skipped (recorded in the session's
    #: ``missing_revisions``) once the stream holds an event of the call this much later
    #: than the first event waiting behind it; once ``call.ended`` is logged, at once.
    archive_gap_deadline_s: PositiveFloat = 120.0
    #: Call events taken from the stream and written together at most (one insert, one
    #: count of their calls' logs, one bulk write per collection); 1 writes them one by one.
    archive_batch_events: BatchSize = 256
    #: Logged events the archive remembers (of the calls it folded lately, with their
    #: documents as last written), so a batch need not read their logs back nor rewrite
    #: unchanged documents; about 1 KiB each, plus the documents. 0 remembers nothing:
    #: every log is read back and every document written again.
    archive_cache_events: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 100_000
    #: Every MongoDB wait (server selection, connect, socket read, whole operation) gives
    #: up after this long; the archive then keeps the message in hand and retries.
    mongo_timeout_s: PositiveFloat = 10.0
