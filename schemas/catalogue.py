"""The catalogue: every message family, the subject it travels on, and its JSON Schema.

``python -m schemas export [PATH]`` writes :func:`json_schema` to a file so analysts can
decode the stream from any language.
"""

from dataclasses import dataclass
from typing import Any

import msgspec

from schemas import subjects
from schemas.call_commands import CALL_COMMAND_TYPES, AnyCallCommand
from schemas.call_events import CALL_EVENT_TYPES, AnyCallEvent
from schemas.captions import Caption, TranscriptSegment
from schemas.dead_letter import DeadLetter
from schemas.heartbeat import ServiceHeartbeat
from schemas.media import (
    MEDIA_REPLY_TYPES,
    MEDIA_REQUEST_TYPES,
    AnyMediaReply,
    AnyMediaRequest,
    AudioChunk,
    MediaNodeHeartbeat,
)
from schemas.media_events import MEDIA_EVENT_TYPES, AnyMediaEvent
from schemas.rpc import RpcError
from schemas.schema_docs import document, struct_types
from schemas.signaling import SocketDelivery
from schemas.version import PACKAGE_VERSION, SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Family:
    """One family of messages: a union decoded in one call, and where it is published."""

    name: str
    subject_pattern: str
    union: Any
    members: tuple[type[msgspec.Struct], ...]
    description: str


FAMILIES: tuple[Family, ...] = (
    Family(
        "call_event",
        "call.evt.<call_id>.<name>",
        AnyCallEvent,
        CALL_EVENT_TYPES,
        "Call lifecycle events (JetStream stream CALL_EVENTS).",
    ),
    Family(
        "call_command",
        "call.cmd.<call_id>.<name>",
        AnyCallCommand,
        CALL_COMMAND_TYPES,
        "Commands from the mode selector to gateways and media nodes.",
    ),
    Family(
        "service_heartbeat",
        "svc.heartbeat.<kind>.<service_id>",
        ServiceHeartbeat,
        (ServiceHeartbeat,),
        "Liveness, state and load of each service instance.",
    ),
    Family(
        "dead_letter",
        subjects.ALL_DEAD_LETTERS,
        DeadLetter,
        (DeadLetter,),
        "Messages that could not be decoded or handled (JetStream stream DEAD_LETTERS).",
    ),
    Family(
        "rpc_error",
        "reply to any media.rpc.* request",
        RpcError,
        (RpcError,),
        "The typed error reply of every request/reply exchange.",
    ),
    Family(
        "media_rpc_request",
        "media.rpc.<node_id>.<verb>",
        AnyMediaRequest,
        MEDIA_REQUEST_TYPES,
        "Requests to one media node: open a session, publish (uplink), open and answer the "
        "downlink of slots, set preferences, renew leases, close.",
    ),
    Family(
        "media_rpc_reply",
        "reply to a media.rpc.<node_id>.<verb> request",
        AnyMediaReply,
        MEDIA_REPLY_TYPES,
        "Successful replies of a media node (failures are rpc_error).",
    ),
    Family(
        "media_event",
        "media.evt.<call_id>.<name>",
        AnyMediaEvent,
        MEDIA_EVENT_TYPES,
        "What a media node tells the call's gateways about a session: its slot map, whether "
        "its video is wanted (pause/resume), leg state, why it closed (core NATS).",
    ),
    Family(
        "media_node_heartbeat",
        subjects.MEDIA_NODE_HEARTBEAT,
        MediaNodeHeartbeat,
        (MediaNodeHeartbeat,),
        "Load of each media node (sessions, forwarded streams, CPU, draining), for placement.",
    ),
    Family(
        "audio_chunk",
        "audio.chunk.<call_id>.<participant_id>",
        AudioChunk,
        (AudioChunk,),
        "A speaker's utterances as 16 kHz mono PCM, cut by voice activity detection.",
    ),
    Family(
        "transcript_segment",
        "transcript.segment.<call_id>",
        TranscriptSegment,
        (TranscriptSegment,),
        "Source-language text of an utterance (partial or final), from a transcriber or a "
        "speaker's browser.",
    ),
    Family(
        "caption",
        "caption.<call_id>.<lang>",
        Caption,
        (Caption,),
        "One utterance in one listener language (the speaker's own language: the original).",
    ),
    Family(
        "socket_delivery",
        "user.<principal_id>.signal",
        SocketDelivery,
        (SocketDelivery,),
        "A Socket.IO event for the sockets of one user or guest, wherever they are connected.",
    ),
)


def json_schema() -> dict[str, Any]:
    """One JSON Schema document: ``$defs`` for every type, plus a family index."""
    unions = [family.union for family in FAMILIES]
    schemas, components = msgspec.json.schema_components(unions, ref_template="#/$defs/{name}")
    document(components, struct_types([m for f in FAMILIES for m in f.members]))
    families = {
        family.name: {
            "subject": family.subject_pattern,
            "description": family.description,
            "schema": schema,
            "types": {
                msgspec.inspect.type_info(m).tag: m.__name__  # type: ignore[attr-defined]
                for m in family.members
            },
        }
        for family, schema in zip(FAMILIES, schemas, strict=True)
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Meeshy calls event catalogue",
        "x-schema-version": SCHEMA_VERSION,
        "x-package-version": PACKAGE_VERSION,
        "x-families": families,
        "$defs": components,
    }
