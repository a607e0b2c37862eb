"""Least privilege on NATS: one user per kind of service, allowed only its own subjects.

Each :class:`Role` says, in terms of :mod:`schemas.subjects` (never subject literals), what a
service publishes, what it subscribes to, which JetStream streams and KV buckets it
provisions, reads or writes, and on which streams it runs consumers. From that the exact
nats-server permissions are derived (:meth:`Role.publish_allow`, :meth:`Role.subscribe_allow`):

- application subjects, as listed;
- its own request/reply inbox (``_INBOX.<user>.>``: nats-py's ``inbox_prefix``), so no
  service reads the replies meant for another;
- ``dlq.<subject>`` for every subject it reads, so it can park what it could not handle;
- JetStream API requests for its own streams, buckets and consumers only (``INFO`` /
  ``CREATE`` / ``UPDATE`` of what it provisions, message reads of what it reads), never
  ``DELETE`` or ``PURGE`` of a stream or a consumer;
- consumers by name: create, ``INFO``, ``MSG.NEXT`` and acknowledgements of its *own*
  durables only (:class:`Consumes` ``durable``), so no role pulls from, acknowledges for,
  redefines or deletes another's; ordered consumers (and KV watches) only the server-named
  ephemeral create and flow control, and only on the streams where a role needs one;
- KV writes (``$KV.<bucket>.>``) only to the buckets it writes;
- replies to requests it received (``allow_responses``) only for a responder (media nodes).

The nats-server configuration is written by :func:`server_config` for the embedded stack
(random passwords per run), the tests (a permissioned server per session) and
``deploy/nats/auth.conf`` (passwords from the environment, for ``compose.yaml``).
``tests/integration/test_nats_permissions.py`` shows the refusals; every integration test
runs the services under these permissions and fails on any violation the server logs.
"""

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from schemas import subjects
from schemas.call_events import ActiveSpeakerChanged

#: Every KV bucket of the gateway (it provisions and writes them all).
_BUCKETS = (
    subjects.CALLS_BUCKET,
    subjects.CALL_CLAIMS_BUCKET,
    subjects.CONVERSATIONS_BUCKET,
    subjects.SHARE_LINKS_BUCKET,
    subjects.PRESENCE_BUCKET,
)


@dataclass(frozen=True, slots=True)
class Consumes:
    """A JetStream consumer a role runs: on ``stream``, filtered to ``subject``.

    ``durable``: the name of its durable consumer (shared by its instances); ``None``: an
    ordered consumer (ephemeral, named by the server, recreated by nats-py after a gap).
    """

    stream: str
    subject: str
    durable: str | None = None


@dataclass(frozen=True, slots=True)
class Role:
    """What one kind of service may do on the bus (its NATS user is :attr:`name`)."""

    name: str
    #: Application subjects (or patterns) it publishes on (core or into a stream).
    publishes: tuple[str, ...] = ()
    #: Application subjects (or patterns) it subscribes to with core NATS.
    subscribes: tuple[str, ...] = ()
    #: Server advisories it follows (``$JS.EVENT.ADVISORY...``; never dead-lettered).
    advisories: tuple[str, ...] = ()
    #: JetStream consumers it runs (its durable pull consumers, ordered push consumers).
    consumes: tuple[Consumes, ...] = ()
    #: Streams it creates or updates at start (``schemas.provisioning``). Each stream has
    #: one owner kind, so no service can change another's retention or limits: the
    #: gateway owns the durable ones, the media nodes and transcribers ``AUDIO_CHUNKS``.
    owns_streams: tuple[str, ...] = ()
    #: Streams it publishes into without owning them: it looks them up (``INFO``) and
    #: waits at start until their owner made them.
    writes_into: tuple[str, ...] = ()
    #: Streams it reads one message of (``get_last_msg``).
    gets_from: tuple[str, ...] = ()
    #: KV buckets it creates at start and writes.
    owns_buckets: tuple[str, ...] = ()
    #: KV buckets it only reads (get, watch).
    reads_buckets: tuple[str, ...] = ()
    #: It answers requests (publishes to the reply subject of a request it received).
    answers_requests: bool = False
    #: Why it exists, for the README table.
    summary: str = field(default="", compare=False)

    @property
    def inbox_prefix(self) -> str:
        return subjects.inbox_prefix(self.name)

    def reads(self) -> tuple[str, ...]:
        """Every application subject it receives messages on (it may dead-letter them)."""
        return tuple(dict.fromkeys(self.subscribes + tuple(c.subject for c in self.consumes)))

    def streams(self) -> tuple[str, ...]:
        """Every stream it touches (provisions, consumes or reads)."""
        used = (
            self.owns_streams
            + self.writes_into
            + tuple(c.stream for c in self.consumes)
            + self.gets_from
        )
        return tuple(dict.fromkeys(used))

    def buckets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.owns_buckets + self.reads_buckets))

    def publish_allow(self) -> list[str]:
        """The nats-server ``publish.allow`` list."""
        out: list[str] = list(self.publishes)
        out += [subjects.dead_letter(s) for s in self.reads()]
        for stream in self.streams():
            ops = ("INFO", "CREATE", "UPDATE") if stream in self.owns_streams else ("INFO",)
            out += [subjects.js_stream_api(op, stream) for op in ops]
        for stream in self.gets_from:
            out += _message_reads(stream)
        for c in self.consumes:
            out += _ordered_consumer_ops(c.stream) if c.durable is None else _durable_ops(c)
        for bucket in self.buckets():
            name = subjects.kv_stream(bucket)
            owned = bucket in self.owns_buckets
            ops = ("INFO", "CREATE", "UPDATE") if owned else ("INFO",)
            out += [subjects.js_stream_api(op, name) for op in ops]
            if owned:
                out.append(subjects.kv_keys(bucket))
            out += _message_reads(name)  # get
            out += _ordered_consumer_ops(name)  # watch (an ordered consumer on the bucket)
        return list(dict.fromkeys(out))

    def subscribe_allow(self) -> list[str]:
        """The nats-server ``subscribe.allow`` list."""
        allowed = [*self.subscribes, *self.advisories, subjects.inboxes_of(self.name)]
        return list(dict.fromkeys(allowed))

    def nats_permissions(self) -> dict[str, object]:
        """This role's ``permissions`` block of a nats-server user."""
        perms: dict[str, object] = {
            "publish": {"allow": self.publish_allow()},
            "subscribe": {"allow": self.subscribe_allow()},
        }
        if self.answers_requests:
            perms["allow_responses"] = True
        return perms


def _message_reads(stream: str) -> list[str]:
    """Reading one message of a stream (a KV get, the last event of a subject)."""
    return [subjects.js_stream_api("MSG.GET", stream), *subjects.js_direct_get(stream)]


def _durable_ops(consumer: Consumes) -> list[str]:
    """Running one named durable pull consumer: create (or re-create with the same config),
    look up, pull, acknowledge; nothing about any other consumer, and no delete."""
    assert consumer.durable is not None
    stream, name = consumer.stream, consumer.durable
    return [
        *subjects.js_durable_create(stream, name),
        subjects.js_consumer_api("INFO", stream, name),
        subjects.js_consumer_api("MSG.NEXT", stream, name),
        subjects.js_acks(stream, name),
    ]


def _ordered_consumer_ops(stream: str) -> list[str]:
    """Running ordered consumers on one stream: the server-named ephemeral create (again
    after a gap; the old one expires by itself), looking them up (read-only, any name: the
    server draws it) and flow-control replies. They acknowledge nothing and never pull.

    The server also reads a ``name`` in the body of that request and then updates the
    consumer of that name, which no subject permission can prevent: so only the roles that
    need ordered consumers on a stream get this (on ``CALL_EVENTS`` the gateway alone; the
    analyst reads by message, see :data:`ANALYST`)."""
    return [
        subjects.js_ephemeral_create(stream),
        subjects.js_consumer_info_any(stream),
        subjects.js_flow_control(stream),
    ]


def archive_consumes(prefix: str) -> tuple[Consumes, ...]:
    """The archive's three durables under one name prefix (``ARCHIVE_DURABLE``)."""
    return (
        Consumes(
            subjects.CALL_EVENTS_STREAM,
            subjects.ALL_CALL_EVENTS,
            subjects.archive_consumer(prefix, subjects.ARCHIVE_EVENTS),
        ),
        Consumes(
            subjects.TRANSCRIPTS_STREAM,
            subjects.ALL_TRANSCRIPT_SEGMENTS,
            subjects.archive_consumer(prefix, subjects.ARCHIVE_SEGMENTS),
        ),
        Consumes(
            subjects.TRANSCRIPTS_STREAM,
            subjects.ALL_CAPTIONS,
            subjects.archive_consumer(prefix, subjects.ARCHIVE_CAPTIONS),
        ),
    )


def _heartbeat(kind: str) -> str:
    return subjects.service_heartbeats_of(kind)


GATEWAY = Role(
    "gateway",
    summary="REST and Socket.IO for browsers; writes call state and its events",
    publishes=(
        subjects.ALL_CALL_EVENTS,  # the outbox of every state change
        subjects.ALL_CALL_COMMANDS,  # commands a state change carries
        subjects.ALL_MEDIA_RPC,  # sessions on media nodes
        subjects.ALL_USER_SIGNALS,  # P2P signals to whichever gateway holds the socket
        subjects.ALL_TRANSCRIPT_SEGMENTS,  # the browser's own transcripts (P2P)
        _heartbeat("gateway"),
    ),
    subscribes=(
        subjects.ALL_USER_SIGNALS,
        subjects.ALL_CALL_COMMANDS_BY_CALL,
        subjects.ALL_MEDIA_EVENTS_BY_CALL,
        subjects.ALL_CAPTIONS,
    ),
    # The event feed: an ordered consumer projecting every event into socket notices.
    consumes=(Consumes(subjects.CALL_EVENTS_STREAM, subjects.ALL_CALL_EVENTS),),
    owns_streams=(
        subjects.CALL_EVENTS_STREAM,
        subjects.DEAD_LETTER_STREAM,
        subjects.TRANSCRIPTS_STREAM,
    ),
    gets_from=(subjects.CALL_EVENTS_STREAM,),  # the outbox checks what was published
    owns_buckets=_BUCKETS,
)

SELECTOR = Role(
    "selector",
    summary="decides P2P or SFU and places calls on media nodes",
    publishes=(
        subjects.ALL_CALL_EVENTS,
        subjects.ALL_CALL_COMMANDS,
        subjects.ALL_MEDIA_RPC,
        _heartbeat("selector"),
    ),
    subscribes=(subjects.MEDIA_NODE_HEARTBEAT,),
    consumes=(
        Consumes(subjects.CALL_EVENTS_STREAM, subjects.ALL_CALL_EVENTS, subjects.SELECTOR_DURABLE),
    ),
    writes_into=(subjects.CALL_EVENTS_STREAM, subjects.DEAD_LETTER_STREAM),
    gets_from=(subjects.CALL_EVENTS_STREAM,),
    owns_buckets=(subjects.CALLS_BUCKET, subjects.CALL_CLAIMS_BUCKET),
)

MEDIA_NODE = Role(
    "media_node",
    summary="the SFU: answers media.rpc, publishes audio for transcription",
    publishes=(
        subjects.ALL_AUDIO_CHUNKS,
        subjects.ALL_MEDIA_EVENTS_BY_CALL,
        subjects.MEDIA_NODE_HEARTBEAT,
        # Its only call event: who speaks (advisory, sequence 0).
        subjects.call_events_named(ActiveSpeakerChanged.subject_name),
        _heartbeat("media_node"),
    ),
    subscribes=(subjects.ALL_MEDIA_RPC,),
    owns_streams=(subjects.AUDIO_CHUNKS_STREAM,),
    writes_into=(subjects.CALL_EVENTS_STREAM, subjects.DEAD_LETTER_STREAM),
    answers_requests=True,
)

TRANSCRIBER = Role(
    "transcriber",
    summary="audio chunks in (work queue), transcript segments out",
    publishes=(subjects.ALL_TRANSCRIPT_SEGMENTS, _heartbeat("transcriber")),
    # A chunk that crashed every worker it reached is read back and dead-lettered.
    advisories=(subjects.js_max_deliveries(subjects.AUDIO_CHUNKS_STREAM),),
    gets_from=(subjects.AUDIO_CHUNKS_STREAM,),
    consumes=(
        Consumes(
            subjects.AUDIO_CHUNKS_STREAM, subjects.ALL_AUDIO_CHUNKS, subjects.TRANSCRIBER_DURABLE
        ),
    ),
    owns_streams=(subjects.AUDIO_CHUNKS_STREAM,),
    writes_into=(subjects.TRANSCRIPTS_STREAM, subjects.DEAD_LETTER_STREAM),
)

TRANSLATOR_BRIDGE = Role(
    "translator_bridge",
    summary="transcript segments in, captions per language out",
    publishes=(subjects.ALL_CAPTIONS, _heartbeat("translator_bridge")),
    subscribes=(subjects.ALL_TRANSCRIPT_SEGMENTS,),
    writes_into=(subjects.TRANSCRIPTS_STREAM, subjects.DEAD_LETTER_STREAM),
    reads_buckets=(subjects.CALLS_BUCKET,),
)

ARCHIVE = Role(
    "archive",
    summary="call events, segments and captions into MongoDB (durable consumers)",
    publishes=(_heartbeat("archive"),),
    consumes=archive_consumes(subjects.ARCHIVE_DURABLE),
    writes_into=(subjects.DEAD_LETTER_STREAM,),
)

SUPERVISOR = Role(
    "supervisor",
    summary="the embedded stack's supervisor: reads heartbeats only",
    subscribes=(subjects.ALL_SERVICE_HEARTBEATS,),
)

ANALYST = Role(
    "analyst",
    summary="read-only: the call event stream and heartbeats (meeshy-tap, tools/demo_call.py)",
    subscribes=(subjects.ALL_CALL_EVENTS, subjects.ALL_SERVICE_HEARTBEATS),
    # No consumer at all: the tap reads the stream message by message (``MSG.GET`` next by
    # subject) and wakes on the live events it subscribes to, so an analyst can neither
    # pull from, acknowledge for, redefine nor delete a service's consumer.
    gets_from=(subjects.CALL_EVENTS_STREAM,),
)

#: Every role a service process runs as, by service kind (``ServiceKind``).
SERVICE_ROLES: dict[str, Role] = {
    role.name: role
    for role in (GATEWAY, SELECTOR, MEDIA_NODE, TRANSCRIBER, TRANSLATOR_BRIDGE, ARCHIVE)
}
#: Every role, services and tools.
ROLES: dict[str, Role] = {**SERVICE_ROLES, SUPERVISOR.name: SUPERVISOR, ANALYST.name: ANALYST}


def role_for(kind: str) -> Role:
    """The role of one kind of service or tool; ``KeyError`` for an unknown one."""
    return ROLES[kind]


def password_variable(role: str) -> str:
    """The environment variable holding a role's password in ``deploy/nats/auth.conf``."""
    return f"NATS_{role.upper()}_PASSWORD"


def _conf_value(value: object) -> str:
    """A value in nats-server's configuration syntax (JSON strings are literal there)."""
    return json.dumps(value)


def server_config(
    passwords: Mapping[str, str] | None,
    *,
    roles: Iterable[Role] | None = None,
    extra_users: Mapping[str, str] | None = None,
    no_auth_user: str | None = None,
) -> str:
    """The ``authorization`` block of a nats-server configuration.

    ``passwords``: role name -> password; ``None`` writes ``$NATS_<ROLE>_PASSWORD``
    references instead, which nats-server reads from its environment (``compose.yaml``).
    ``extra_users``: all-access users (name -> password) for tests and operators.
    ``no_auth_user``: the user a connection without credentials becomes (nats-server's
    ``no_auth_user``); unset, such a connection is refused.
    """
    lines = ["authorization {", "  users = ["]
    for role in roles if roles is not None else ROLES.values():
        secret = (
            f"${password_variable(role.name)}"
            if passwords is None
            else _conf_value(passwords[role.name])
        )
        lines.append(
            f"    {{user: {_conf_value(role.name)}, password: {secret}, "
            f"permissions: {_conf_value(role.nats_permissions())}}}"
        )
    for user, password in (extra_users or {}).items():
        lines.append(f"    {{user: {_conf_value(user)}, password: {_conf_value(password)}}}")
    lines.append("  ]")
    lines.append("}")
    if no_auth_user is not None:
        lines.append(f"no_auth_user: {_conf_value(no_auth_user)}")
    return "\n".join(lines) + "\n"


#: The roles of a deployment (``compose.yaml``): every role but the embedded stack's
#: supervisor.
DEPLOYED_ROLES: tuple[Role, ...] = tuple(r for r in ROLES.values() if r is not SUPERVISOR)


def deployed_config() -> str:
    """``deploy/nats/auth.conf``: the deployed roles, passwords read by nats-server from
    ``$NATS_<ROLE>_PASSWORD`` (compose.yaml passes them from ``.env``), no anonymous user."""
    header = (
        "# Generated by `python -m schemas.permissions` from schemas/permissions.py: edit\n"
        "# that, not this (tests/unit/test_nats_security.py checks they agree).\n"
    )
    return header + server_config(None, roles=DEPLOYED_ROLES)


def allows(patterns: Iterable[str], subject: str) -> bool:
    """Whether a NATS permission list (``*`` one token, ``>`` the rest) covers ``subject``."""
    tokens = subject.split(".")
    for pattern in patterns:
        parts = pattern.split(".")
        for i, part in enumerate(parts):
            if part == ">":
                if len(tokens) > i:
                    return True
                break
            if i >= len(tokens) or (part != "*" and part != tokens[i]):
                break
        else:
            if len(parts) == len(tokens):
                return True
    return False


if __name__ == "__main__":
    sys.stdout.write(deployed_config())
