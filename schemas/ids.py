"""Identifier types.

Ids become NATS subject tokens (``call.evt.<call_id>.joined``), so they may not contain
dots, wildcards or whitespace. The same pattern is enforced when a message is decoded and
when a subject is built.
"""

import re
import uuid
from typing import Annotated

import msgspec

ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_ID_RE = re.compile(ID_PATTERN)

#: An identifier that is safe as one NATS subject token. Decoding checks only its length:
#: a regex per id on every hop cost more than the rest of the decode (bench/bus.py). The
#: character set is enforced where it matters, when an id is put into a subject
#: (:func:`check_id` in :mod:`schemas.subjects`) and where ids enter the system (gateway).
Id = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        description="[A-Za-z0-9_-]{1,128}",
        extra_json_schema={"pattern": ID_PATTERN},
    ),
]

#: BCP-47-ish language code, lower-case primary tag with an optional region ("en", "pt-br").
LANG_PATTERN = r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$"
Lang = Annotated[
    str,
    msgspec.Meta(
        min_length=2,
        max_length=12,
        description="language code, e.g. en, fr, pt-br",
        extra_json_schema={"pattern": LANG_PATTERN},
    ),
]


class InvalidId(ValueError):
    """An id that cannot be used as a subject token."""


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidId`."""
    if not _ID_RE.fullmatch(value):
        # The offending value is left out on purpose: ids can be user-provided.
        raise InvalidId(f"{what} must match {ID_PATTERN}")
    return value


def new_id() -> str:
    """A fresh random id (32 hex characters)."""
    return uuid.uuid4().hex
