"""Commands for a call, published on ``call.cmd.<call_id>.<name>``.

The mode selector issues them; the gateways holding the call's sockets and the media nodes
serving it act on them. ``epoch`` orders migrations: a command with an older epoch than
the call's current one is stale and ignored.
"""

from datetime import datetime
from typing import ClassVar

import msgspec

from schemas.call_events import EndReason
from schemas.ids import Id, new_id
from schemas.message import Message, utc_now


class CallCommand(Message, frozen=True, kw_only=True):
    """Fields every call command carries."""

    subject_name: ClassVar[str] = ""

    call_id: Id
    command_id: Id = msgspec.field(default_factory=new_id)
    issued_at: datetime = msgspec.field(default_factory=utc_now)


class MigrateToSfu(CallCommand, frozen=True, kw_only=True, tag="call.migrate_to_sfu"):
    """Move the call's media onto media node ``node_id`` (make-before-break)."""

    subject_name: ClassVar[str] = "migrate_to_sfu"

    epoch: int
    node_id: Id


class MigrateToP2p(CallCommand, frozen=True, kw_only=True, tag="call.migrate_to_p2p"):
    """Move the call's media back to a direct peer-to-peer connection."""

    subject_name: ClassVar[str] = "migrate_to_p2p"

    epoch: int


class EndCall(CallCommand, frozen=True, kw_only=True, tag="call.end"):
    """End the call for everyone and release its media resources."""

    subject_name: ClassVar[str] = "end"

    reason: EndReason


AnyCallCommand = MigrateToSfu | MigrateToP2p | EndCall
"""Every call command."""

CALL_COMMAND_TYPES: tuple[type[CallCommand], ...] = (MigrateToSfu, MigrateToP2p, EndCall)
