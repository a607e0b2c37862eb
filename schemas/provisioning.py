"""Idempotent creation of the JetStream streams and KV buckets the system needs.

Every service runs :func:`provision` at start-up, so whichever starts first creates them
and the rest find them as they are. A resource that exists with the same configuration is
left untouched; one whose managed limits differ is updated in place (never deleted).
"""

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext

from schemas import subjects
from schemas.logs import get_logger
from schemas.settings import BusSettings

if TYPE_CHECKING:
    from schemas.permissions import Role

log = get_logger("schemas.provisioning")

#: JetStream de-duplication window for ``Nats-Msg-Id`` (event ids).
DUPLICATE_WINDOW_S = 120.0
#: Audio older than this is of no use to live captions; a backlog past it is dropped.
AUDIO_CHUNKS_MAX_AGE_S = 120.0
AUDIO_CHUNKS_MAX_BYTES = 512 * 1024 * 1024


#: JetStream's "no suitable peers for placement": a replicated stream asked of a cluster
#: whose peers are not all online yet (it is forming, or a node is restarting).
_NO_PEERS_FOR_PLACEMENT = 10005


def _forming(exc: Exception) -> bool:
    """Whether a provisioning error is the cluster not being ready yet (worth a retry)."""
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return True  # JetStream temporarily unavailable (no meta leader yet)
    if isinstance(exc, nats.errors.TimeoutError | nats.errors.NoRespondersError):
        # No answer at all: the API request reached no leader (a cluster still electing).
        # Every step is safe to repeat: each looks the resource up before changing it.
        return True
    return isinstance(exc, nats.js.errors.BadRequestError) and (
        exc.err_code == _NO_PEERS_FOR_PLACEMENT
    )


async def _while_forming(op: Callable[[], Awaitable[str]], what: str, deadline: float) -> str:
    """Run ``op``, retrying while the cluster has too few peers online to place it, until
    ``deadline`` (loop time): services started with their cluster wait for it to form."""
    loop = asyncio.get_running_loop()
    delay = 0.1
    warned = False
    while True:
        try:
            return await op()
        except (
            nats.js.errors.Error,
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
        ) as exc:
            if not _forming(exc) or loop.time() + delay > deadline:
                raise
            if not warned:
                log.warning(
                    "bus.provision_waiting_for_peers",
                    resource=what,
                    error=getattr(exc, "description", None) or type(exc).__name__,
                )
                warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


@dataclass(frozen=True, slots=True)
class ProvisionReport:
    """What :func:`provision` did, per resource: ``created``, ``updated`` or ``unchanged``."""

    actions: dict[str, str]


def stream_configs(settings: BusSettings) -> list[StreamConfig]:
    """The streams, as configured for these settings."""
    return [
        StreamConfig(
            name=subjects.CALL_EVENTS_STREAM,
            description="Every call lifecycle event, in order; the history of every call.",
            subjects=[subjects.ALL_CALL_EVENTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=settings.call_events_max_age_s,
            max_bytes=settings.call_events_max_bytes,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.nats_stream_replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=subjects.DEAD_LETTER_STREAM,
            description="Messages a subscriber could not decode or handle, with the reason.",
            subjects=[subjects.ALL_DEAD_LETTERS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=settings.dead_letters_max_age_s,
            max_bytes=256 * 1024 * 1024,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.nats_stream_replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=subjects.TRANSCRIPTS_STREAM,
            description="Transcript segments and captions (published with core NATS, kept "
            "here so the archive stores the final ones durably).",
            subjects=[subjects.ALL_TRANSCRIPT_SEGMENTS, subjects.ALL_CAPTIONS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=settings.transcripts_max_age_s,
            max_bytes=settings.transcripts_max_bytes,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.nats_stream_replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=subjects.AUDIO_CHUNKS_STREAM,
            description=(
                "Audio chunks waiting for a transcriber (work queue: a chunk is removed "
                "once a transcriber acknowledges it; one that dies leaves it for another)."
            ),
            subjects=[subjects.ALL_AUDIO_CHUNKS],
            retention=RetentionPolicy.WORK_QUEUE,
            # Memory: chunks live seconds; a NATS restart loses only the audio in flight.
            storage=StorageType.MEMORY,
            max_age=AUDIO_CHUNKS_MAX_AGE_S,
            max_bytes=AUDIO_CHUNKS_MAX_BYTES,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.nats_stream_replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
    ]


#: Every bucket: (name, what it holds, revisions kept per key).
_BUCKETS: tuple[tuple[str, str, int], ...] = (
    (
        subjects.CALLS_BUCKET,
        "Live state of every active call; changed only by compare-and-set.",
        5,
    ),
    (
        subjects.CALL_CLAIMS_BUCKET,
        "The one active call of each conversation (created atomically).",
        1,
    ),
    (
        subjects.CONVERSATIONS_BUCKET,
        "Conversation registry: type and members with roles.",
        1,
    ),
    (
        subjects.SHARE_LINKS_BUCKET,
        "Guest share links of GROUP conversations (revocable, counted uses).",
        1,
    ),
    (
        subjects.PRESENCE_BUCKET,
        "Last sign of life of each participant (heartbeats), apart from the call's state.",
        1,
    ),
)

#: Keys of these buckets expire on their own (seconds since their last write).
_BUCKET_TTL_S = {subjects.PRESENCE_BUCKET: 600.0}


def kv_configs(settings: BusSettings) -> list[KeyValueConfig]:
    """The key-value buckets, as configured for these settings."""
    return [
        KeyValueConfig(
            bucket=name,
            description=description,
            history=history,
            storage=StorageType.FILE,
            replicas=settings.nats_stream_replicas,
            ttl=_BUCKET_TTL_S.get(name),
        )
        for name, description, history in _BUCKETS
    ]


_MANAGED_STREAM_FIELDS = ("subjects", "max_age", "max_bytes", "discard", "duplicate_window")


def _plain(value: object) -> object:
    """Enums come back from the server as plain strings; compare their values."""
    return getattr(value, "value", value)


async def _ensure_stream(js: JetStreamContext, wanted: StreamConfig) -> str:
    assert wanted.name is not None
    try:
        info = await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(wanted)
        return "created"
    current = info.config
    differs = [
        f
        for f in _MANAGED_STREAM_FIELDS
        if getattr(wanted, f) is not None
        and _plain(getattr(current, f)) != _plain(getattr(wanted, f))
    ]
    if not differs:
        return "unchanged"
    log.info("bus.stream_config_differs", stream=wanted.name, fields=differs)
    # Replicas and storage cannot always change in place; keep the live ones.
    wanted.num_replicas = current.num_replicas
    wanted.storage = current.storage
    await js.update_stream(wanted)
    return "updated"


async def _ensure_kv(js: JetStreamContext, wanted: KeyValueConfig) -> str:
    try:
        await js.key_value(wanted.bucket)
    except nats.js.errors.BucketNotFoundError:
        await js.create_key_value(wanted)
        return "created"
    return "unchanged"


async def provision(
    js: JetStreamContext, settings: BusSettings, role: "Role | None" = None
) -> ProvisionReport:
    """Create what is missing; safe to run from every instance at every start.

    On a cluster still forming (too few peers online to place a replicated stream), each
    creation is retried until ``NATS_CONNECT_DEADLINE_S`` has passed.

    With a ``role`` (a service running under its own NATS user, see
    :mod:`schemas.permissions`), only the streams and buckets the role owns are created or
    updated (its user may touch no others); those it only reads are waited for, up to
    ``NATS_CONNECT_DEADLINE_S``, then :class:`ResourceMissing` names them.
    """
    actions: dict[str, str] = {}
    owned_streams = set(role.owns_streams) if role else None
    owned_buckets = set(role.owns_buckets) if role else None
    deadline = asyncio.get_running_loop().time() + settings.nats_connect_deadline_s
    for stream in stream_configs(settings):
        assert stream.name is not None
        if owned_streams is None or stream.name in owned_streams:
            name = f"stream:{stream.name}"
            actions[name] = await _while_forming(
                functools.partial(_ensure_stream, js, stream), name, deadline
            )
    for bucket in kv_configs(settings):
        if owned_buckets is None or bucket.bucket in owned_buckets:
            name = f"kv:{bucket.bucket}"
            actions[name] = await _while_forming(
                functools.partial(_ensure_kv, js, bucket), name, deadline
            )
    for resource, action in actions.items():
        if action != "unchanged":
            log.info("bus.provisioned", resource=resource, action=action)
    if role is not None:
        await _wait_for_read_only(js, role, settings.nats_connect_deadline_s)
    return ProvisionReport(actions)


class ResourceMissing(RuntimeError):
    """A stream or bucket a service reads was not provisioned by its owner in time."""


async def _wait_for_read_only(js: JetStreamContext, role: "Role", deadline_s: float) -> None:
    """Wait until the streams and buckets the role reads but does not own exist (their
    owners create them: the gateway, a media node...)."""
    streams = [s for s in role.streams() if s not in role.owns_streams]
    streams += [subjects.kv_stream(b) for b in role.reads_buckets]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    logged = False
    for stream in streams:
        while True:
            try:
                await js.stream_info(stream)
                break
            except nats.js.errors.NotFoundError:
                if loop.time() >= deadline:
                    raise ResourceMissing(
                        f"stream {stream} does not exist (its owner has not started within "
                        f"{deadline_s:g}s)"
                    ) from None
                if not logged:
                    log.info("bus.waiting_for_stream", stream=stream, role=role.name)
                    logged = True
                await asyncio.sleep(0.2)
