"""Dead letters on ``dlq.<original subject>`` (JetStream ``DEAD_LETTERS``).

A subscriber that receives a message it cannot decode, or whose handler keeps failing on
it, parks the message here untouched with the reason, instead of crashing or dropping it.
"""

from datetime import datetime
from typing import Literal

import msgspec

from schemas.ids import Id
from schemas.message import Message, utc_now

FailureKind = Literal["decode", "handler"]


class DeadLetter(Message, frozen=True, kw_only=True, tag="dead_letter"):
    """A message that could not be processed, with why and by whom."""

    original_subject: str
    failure: FailureKind
    reason: str
    payload: bytes
    service_id: Id
    expected_type: str
    failed_at: datetime = msgspec.field(default_factory=utc_now)
    delivery_attempts: int = 1
