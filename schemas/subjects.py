"""Every NATS subject of the system, and nothing else.

No other module writes a subject as a string literal: it calls a function here, which
validates each id it puts into a token. Wildcard patterns for subscribers are constants.

| subject | kind | producer -> consumer |
|---|---|---|
| ``call.evt.<call_id>.<name>`` | JetStream ``CALL_EVENTS`` | gateway, selector -> everyone |
| ``call.cmd.<call_id>.<name>`` | core | selector -> gateways, media nodes |
| ``media.rpc.<node_id>.<verb>`` | request/reply | gateway -> one media node |
| ``media.node.heartbeat`` | core | media nodes -> placement |
| ``media.evt.<call_id>.<name>`` | core | media node -> the gateways holding the call's sockets |
| ``audio.chunk.<call_id>.<participant_id>`` | stream ``AUDIO_CHUNKS`` | media node -> transcriber |
| ``transcript.segment.<call_id>`` | core | transcriber, gateway -> translator bridge |
| ``caption.<call_id>.<lang>`` | core | translator bridge -> gateways |
| ``client.<gateway_id>.deliver`` | core | anyone -> the gateway holding a socket |
| ``user.<user_id>.signal`` | core | anyone -> whichever gateway holds that user's sockets |
| ``svc.heartbeat.<kind>.<service_id>`` | core | every service -> operators, supervisors |
| ``dlq.<subject>`` | JetStream ``DEAD_LETTERS`` | a subscriber that could not cope -> ops |
"""

import re

from schemas.ids import LANG_PATTERN, check_id

_LANG_RE = re.compile(LANG_PATTERN)

# --- JetStream streams and KV buckets ---------------------------------------------------
CALL_EVENTS_STREAM = "CALL_EVENTS"
#: Transcript segments and captions, kept for the archive (core publishes are stored too).
TRANSCRIPTS_STREAM = "TRANSCRIPTS"
DEAD_LETTER_STREAM = "DEAD_LETTERS"
CALLS_BUCKET = "calls"
#: Work queue of audio chunks for the transcribers (stores the media nodes' publishes).
AUDIO_CHUNKS_STREAM = "AUDIO_CHUNKS"

# --- wildcard patterns (for subscribers and stream definitions) -------------------------
ALL_CALL_EVENTS = "call.evt.>"
ALL_CALL_COMMANDS = "call.cmd.>"
ALL_SERVICE_HEARTBEATS = "svc.heartbeat.>"
ALL_DEAD_LETTERS = "dlq.>"
ALL_AUDIO_CHUNKS = "audio.chunk.>"
ALL_TRANSCRIPT_SEGMENTS = "transcript.segment.*"
ALL_CAPTIONS = "caption.*.*"
MEDIA_NODE_HEARTBEAT = "media.node.heartbeat"
ALL_MEDIA_EVENTS = "media.evt.>"
#: Every request to every media node (``media.rpc.<node_id>.<verb>``).
ALL_MEDIA_RPC = "media.rpc.*.*"
#: Every person's socket deliveries (``user.<principal_id>.signal``).
ALL_USER_SIGNALS = "user.*.signal"
#: Every media-node event of every call (``media.evt.<call_id>.<name>``).
ALL_MEDIA_EVENTS_BY_CALL = "media.evt.*.*"
#: Every command of every call, one call at a time (``call.cmd.<call_id>.<name>``).
ALL_CALL_COMMANDS_BY_CALL = "call.cmd.*.*"

_DLQ_PREFIX = "dlq."


def _token(value: str, what: str) -> str:
    return check_id(value, what)


def call_event(call_id: str, name: str) -> str:
    """Where an event of one call is published (captured by the ``CALL_EVENTS`` stream)."""
    return f"call.evt.{_token(call_id, 'call_id')}.{_token(name, 'event name')}"


def call_events_of(call_id: str) -> str:
    """Every event of one call."""
    return f"call.evt.{_token(call_id, 'call_id')}.*"


def call_events_named(name: str) -> str:
    """One kind of event of every call (e.g. ``initiated``: every call's first event)."""
    return f"call.evt.*.{_token(name, 'event name')}"


def call_command(call_id: str, name: str) -> str:
    """A command addressed to whoever serves one call."""
    return f"call.cmd.{_token(call_id, 'call_id')}.{_token(name, 'command name')}"


def call_commands_of(call_id: str) -> str:
    """Every command of one call."""
    return f"call.cmd.{_token(call_id, 'call_id')}.*"


def media_rpc(node_id: str, verb: str) -> str:
    """A request to one media node."""
    return f"media.rpc.{_token(node_id, 'node_id')}.{_token(verb, 'verb')}"


def media_rpc_all(node_id: str) -> str:
    """Every request to one media node."""
    return f"media.rpc.{_token(node_id, 'node_id')}.*"


def media_event(call_id: str, name: str) -> str:
    """What a media node tells the call's gateways about one session (slots, demand, state)."""
    return f"media.evt.{_token(call_id, 'call_id')}.{_token(name, 'event name')}"


def media_events_of(call_id: str) -> str:
    """Every media-node event of one call."""
    return f"media.evt.{_token(call_id, 'call_id')}.*"


def audio_chunk(call_id: str, participant_id: str) -> str:
    """Audio of one speaker, for the transcriber queue group."""
    return f"audio.chunk.{_token(call_id, 'call_id')}.{_token(participant_id, 'participant_id')}"


def audio_chunks_of(call_id: str) -> str:
    """Every speaker's audio of one call."""
    return f"audio.chunk.{_token(call_id, 'call_id')}.*"


def transcript_segment(call_id: str) -> str:
    """Source-language transcript segments of one call."""
    return f"transcript.segment.{_token(call_id, 'call_id')}"


def caption(call_id: str, lang: str) -> str:
    """Captions of one call in one language."""
    if not _LANG_RE.fullmatch(lang):
        raise ValueError(f"lang must match {LANG_PATTERN}")
    # A region separator is a dash, which is a valid token character; nothing to escape.
    return f"caption.{_token(call_id, 'call_id')}.{lang}"


def captions_of(call_id: str) -> str:
    """Every caption of one call, whatever the language."""
    return f"caption.{_token(call_id, 'call_id')}.*"


def gateway_deliver(gateway_id: str) -> str:
    """What must be pushed to a socket held by one gateway."""
    return f"client.{_token(gateway_id, 'gateway_id')}.deliver"


def user_signal(user_id: str) -> str:
    """What must reach every socket of one user, wherever it is connected."""
    return f"user.{_token(user_id, 'user_id')}.signal"


def service_heartbeats_of(kind: str) -> str:
    """The heartbeats of every instance of one kind of service."""
    return f"svc.heartbeat.{_token(kind, 'kind')}.*"


def service_heartbeat(kind: str, service_id: str) -> str:
    """Periodic liveness and load of one service instance."""
    return f"svc.heartbeat.{_token(kind, 'kind')}.{_token(service_id, 'service_id')}"


def dead_letter(original_subject: str) -> str:
    """Where a message that could not be decoded or handled is parked, with the error."""
    if original_subject.startswith(_DLQ_PREFIX):
        # A dead letter that itself fails is parked once, never re-wrapped forever.
        return original_subject
    return _DLQ_PREFIX + original_subject


# --- gateway: conversations, guests, one active call per conversation -----------------
CONVERSATIONS_BUCKET = "conversations"
CALL_CLAIMS_BUCKET = "call_claims"
SHARE_LINKS_BUCKET = "share_links"


PRESENCE_BUCKET = "presence"


def presence_key(call_id: str, participant_id: str) -> str:
    """The ``presence`` key of one participant of one call."""
    return f"{_token(call_id, 'call_id')}.{_token(participant_id, 'participant_id')}"


def call_claim_key(conversation_id: str) -> str:
    """The ``call_claims`` key holding the one active call of a conversation."""
    return _token(conversation_id, "conversation_id")


# --- Durable consumers ------------------------------------------------------------------
# Their names are part of each role's NATS permissions (schemas/permissions.py): a role may
# create, pull from and acknowledge only its own durables, so these are the defaults of the
# services' settings and of the deployed permissions alike.

#: The selector instances' shared consumer of ``CALL_EVENTS`` (``SELECTOR_DURABLE``).
SELECTOR_DURABLE = "mode-selector"
#: The transcribers' shared consumer of ``AUDIO_CHUNKS`` (``TRANSCRIBER_QUEUE``).
TRANSCRIBER_DURABLE = "transcribers"
#: The archive's consumers' name prefix (``ARCHIVE_DURABLE``).
ARCHIVE_DURABLE = "archive"
#: The archive's three consumers: what each reads, by the suffix of its name.
ARCHIVE_EVENTS, ARCHIVE_SEGMENTS, ARCHIVE_CAPTIONS = "events", "segments", "captions"


def archive_consumer(prefix: str, kind: str) -> str:
    """The name of one of the archive's durables (``<prefix>-events`` ...)."""
    return f"{_token(prefix, 'archive durable')}-{_token(kind, 'archive consumer')}"


# --- NATS plumbing: JetStream API, KV, request/reply inboxes ------------------------------
# Named here so the permissions of each service (schemas/permissions.py) are built from the
# same source as everything else. Stream and bucket names are ours, never a client's.

#: Where the replies of one NATS user's requests arrive (nats-py ``inbox_prefix``): each user
#: has its own, so no service can read the replies meant for another.
_INBOX_ROOT = "_INBOX"


def inbox_prefix(user: str | None) -> str:
    """The inbox prefix of a NATS user (``_INBOX.<user>``; ``_INBOX`` without a user)."""
    return _INBOX_ROOT if not user else f"{_INBOX_ROOT}.{_token(user, 'nats user')}"


def inboxes_of(user: str | None) -> str:
    """Every reply subject of one NATS user's requests."""
    return f"{inbox_prefix(user)}.>"


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{_token(bucket, 'bucket')}"


def kv_keys(bucket: str) -> str:
    """Every key of a KV bucket, as the subjects its writes are published on."""
    return f"$KV.{_token(bucket, 'bucket')}.>"


def js_stream_api(operation: str, stream: str) -> str:
    """A JetStream API request about one stream (``INFO``, ``CREATE``, ``UPDATE``, ``MSG.GET``)."""
    return f"$JS.API.STREAM.{operation}.{_token(stream, 'stream')}"


def js_direct_get(stream: str) -> tuple[str, str]:
    """Direct reads of one stream's messages (by sequence, and last by subject)."""
    name = _token(stream, "stream")
    return f"$JS.API.DIRECT.GET.{name}", f"$JS.API.DIRECT.GET.{name}.>"


def js_consumer_api(operation: str, stream: str, consumer: str) -> str:
    """A JetStream API request about one consumer of one stream (``INFO``, ``MSG.NEXT``)."""
    return f"$JS.API.CONSUMER.{operation}.{_token(stream, 'stream')}.{_token(consumer, 'consumer')}"


def js_consumer_info_any(stream: str) -> str:
    """Looking up any consumer of one stream (read-only): nats-py asks it of its ordered
    consumers, whose names the server draws (a KV watch, to know when it has caught up)."""
    return f"$JS.API.CONSUMER.INFO.{_token(stream, 'stream')}.*"


def js_ephemeral_create(stream: str) -> str:
    """Creating a server-named ephemeral consumer on one stream (what nats-py's ordered
    consumers and KV watches send)."""
    return f"$JS.API.CONSUMER.CREATE.{_token(stream, 'stream')}"


def js_durable_create(stream: str, consumer: str) -> tuple[str, str, str]:
    """Creating (or updating) one named durable consumer on one stream: the legacy durable
    form, and the named form without and with a filter subject."""
    name, durable = _token(stream, "stream"), _token(consumer, "consumer")
    return (
        f"$JS.API.CONSUMER.DURABLE.CREATE.{name}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{name}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{name}.{durable}.>",
    )


def js_max_deliveries(stream: str, consumer: str = "*") -> str:
    """The server's advisory that a message of ``stream`` reached its consumer's
    ``max_deliver`` without being acknowledged (JSON: ``stream_seq``, ``deliveries``)."""
    name = _token(stream, "stream")
    last = consumer if consumer == "*" else _token(consumer, "consumer")
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{name}.{last}"


def js_acks(stream: str, consumer: str) -> str:
    """Acknowledgements of the messages one consumer of one stream delivers."""
    return f"$JS.ACK.{_token(stream, 'stream')}.{_token(consumer, 'consumer')}.>"


def js_flow_control(stream: str) -> str:
    """Flow-control replies of push consumers (ordered consumers, KV watches) of one stream."""
    return f"$JS.FC.{_token(stream, 'stream')}.>"
