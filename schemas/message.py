"""The base every message on the bus derives from.

Each concrete message is a frozen, keyword-only ``msgspec.Struct`` whose JSON carries a
``type`` tag (for example ``"participant.joined"``) and a ``schema_version``. Decoders
ignore fields they do not know, so producers can add optional fields without breaking
older consumers.
"""

from datetime import UTC, datetime

import msgspec

from schemas.version import SCHEMA_VERSION


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (encoded as RFC 3339)."""
    return datetime.now(UTC)


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Common base: a ``type`` tag and the schema version the producer wrote."""

    schema_version: int = SCHEMA_VERSION
