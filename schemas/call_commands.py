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
    """Move the call's media onto media node ``node_id`` (make-before-break).

    The gateways holding the call's sockets open a session per participant on the node
    (or reuse a pre-warmed one) and tell each client ``call:mode-switch``. The call's state
    (``CallState.migration``) is the truth; the command only says "now".
    """

    subject_name: ClassVar[str] = "migrate_to_sfu"

    epoch: int
    node_id: Id
    #: Seconds participants have to bring the new path up.
    deadline_s: float = 0.0


class MigrateToP2p(CallCommand, frozen=True, kw_only=True, tag="call.migrate_to_p2p"):
    """Move the call's media back to a direct peer-to-peer connection.

    ``offerer_id`` is the participant told to send the offer (the other answers).
    """

    subject_name: ClassVar[str] = "migrate_to_p2p"

    epoch: int
    #: The participant told to send the offer (None: nobody is left to connect to).
    offerer_id: Id | None = None
    #: Seconds participants have to bring the new path up.
    deadline_s: float = 0.0


class Prewarm(CallCommand, frozen=True, kw_only=True, tag="call.prewarm"):
    """While the call is peer-to-peer, hold an idle session per participant on ``node_id``
    (connected, not sending), so a later switch to the SFU only starts sending; ``node_id``
    ``None``: stop holding them (the call no longer qualifies)."""

    subject_name: ClassVar[str] = "prewarm"

    #: The node to hold idle sessions on; ``None`` releases them.
    node_id: Id | None = None


class EndCall(CallCommand, frozen=True, kw_only=True, tag="call.end"):
    """End the call for everyone and release its media resources."""

    subject_name: ClassVar[str] = "end"

    reason: EndReason


AnyCallCommand = MigrateToSfu | MigrateToP2p | Prewarm | EndCall
"""Every call command."""

CALL_COMMAND_TYPES: tuple[type[CallCommand], ...] = (MigrateToSfu, MigrateToP2p, Prewarm, EndCall)
