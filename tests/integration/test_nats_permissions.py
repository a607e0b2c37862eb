"""Least privilege on NATS: each service's user is refused what its role does not cover.

The test nats-server runs with the users of ``schemas/permissions.py``; these tests connect
as one role at a time and show the refusals the issue names (a transcriber cannot publish
call commands, only gateways publish ``user.<id>.signal``, only gateways and the selector
call ``media.rpc``), and that what a role needs still passes. A refused publish is never
delivered: the test publishes the refused message first and an allowed sentinel after it on
the same connection, so once the sentinel arrived the refused one would have too.
"""

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from devstack.binaries import nats_server_path
from schemas import permissions, subjects
from schemas.bus import Bus, flush_through
from schemas.provisioning import ResourceMissing, provision
from schemas.settings import BusSettings
from tests.support.nats_server import NatsServer

pytestmark = pytest.mark.nats_violations_expected

Connect = Callable[[str], Awaitable[tuple[Client, list[Exception]]]]


@pytest.fixture
async def connect_as(nats_server: NatsServer) -> AsyncIterator[Connect]:
    """Connect as a role (with its own inbox prefix); every error the server sends is kept."""
    clients: list[Client] = []

    async def connect(role: str) -> tuple[Client, list[Exception]]:
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        user, password = nats_server.credentials(role)
        nc = await nats.connect(
            nats_server.url,
            user=user,
            password=password,
            inbox_prefix=subjects.inbox_prefix(user),
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=3,
        )
        clients.append(nc)
        return nc, errors

    yield connect
    for nc in clients:
        await nc.close()


async def _delivered(
    test_nc: Client, nc: Client, refused_subject: str, allowed_subject: str
) -> list[str]:
    """Publish on ``refused_subject`` then ``allowed_subject`` (same connection); return the
    subjects a listener received, once the allowed one arrived.

    The listener's subscriptions have no callbacks: nats-py queues each message on its
    subscription as it reads the socket, in the order the server sent them, so once the
    allowed one is queued, the refused one would be queued already (callbacks run in a task
    per subscription, in no order between subscriptions)."""
    refused = await test_nc.subscribe(refused_subject)
    allowed = await test_nc.subscribe(allowed_subject)
    await flush_through(test_nc)
    await nc.publish(refused_subject, b"{}")
    for _ in range(15):
        # Any allowed message sent after the refused one proves the point; send it again
        # until one is queued (the first one after a refusal was now and then not
        # delivered, about once in ten runs, while this module subscribed with nats-py's
        # bare ``flush``, which can return before the SUB reached the server: see
        # ``flush_through``; the retry stays in case part of it is the server's).
        await nc.publish(allowed_subject, b"{}")
        await flush_through(nc)
        try:
            await allowed.next_msg(timeout=1)
            break
        except nats.errors.TimeoutError:
            continue
    else:
        raise AssertionError(f"{allowed_subject} never arrived")
    got = [refused_subject] * refused.pending_msgs + [allowed_subject]
    for sub in (refused, allowed):
        await sub.unsubscribe()
    return got


async def _passes(test_nc: Client, nc: Client, subject: str) -> None:
    """What ``nc`` publishes on ``subject`` reaches a listener (sent again until one does:
    like the sentinel above, a first message is now and then not delivered)."""
    sub = await test_nc.subscribe(subject)
    await flush_through(test_nc)
    try:
        for _ in range(15):
            await nc.publish(subject, b"{}")
            await flush_through(nc)
            try:
                await sub.next_msg(timeout=1)
                return
            except nats.errors.TimeoutError:
                continue
        raise AssertionError(f"{subject} never arrived")
    finally:
        await sub.unsubscribe()


async def _violation(errors: list[Exception], subject: str) -> None:
    """Wait for the server's permissions violation about ``subject``."""

    async def seen() -> None:
        while not any(
            subject.lower() in str(e).lower() and "permissions violation" in str(e).lower()
            for e in errors
        ):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(seen(), 5)


async def test_a_transcriber_cannot_publish_call_commands(connect_as: Connect, uid: str) -> None:
    test_nc, _ = await connect_as("test")
    nc, errors = await connect_as("transcriber")
    command = subjects.call_command(uid, "end")
    allowed = subjects.transcript_segment(uid)
    got = await _delivered(test_nc, nc, command, allowed)
    assert got == [allowed]
    await _violation(errors, command)


@pytest.mark.parametrize("role", ["selector", "media_node", "transcriber", "translator_bridge"])
async def test_only_gateways_publish_user_signals(connect_as: Connect, uid: str, role: str) -> None:
    test_nc, _ = await connect_as("test")
    nc, errors = await connect_as(role)
    signal = subjects.user_signal(f"u{uid}")
    allowed = subjects.service_heartbeat(role, f"s{uid}")
    got = await _delivered(test_nc, nc, signal, allowed)
    assert got == [allowed]
    await _violation(errors, signal)
    # The gateway may: the same signal goes through.
    gw, gw_errors = await connect_as("gateway")
    await _passes(test_nc, gw, signal)
    assert not gw_errors


@pytest.mark.parametrize(
    "role", ["media_node", "transcriber", "translator_bridge", "archive", "analyst"]
)
async def test_only_gateways_and_the_selector_call_media_rpc(
    connect_as: Connect, uid: str, role: str
) -> None:
    rpc = subjects.media_rpc(f"node{uid}", "open_session")
    node, _ = await connect_as("media_node")

    async def answer(msg: Msg) -> None:
        await msg.respond(b"ok")

    await node.subscribe(rpc, cb=answer)
    await flush_through(node)
    nc, errors = await connect_as(role)
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await nc.request(rpc, b"{}", timeout=1)
    await _violation(errors, rpc)
    for allowed in ("gateway", "selector"):
        caller, caller_errors = await connect_as(allowed)
        reply = await caller.request(rpc, b"{}", timeout=5)
        assert reply.data == b"ok" and not caller_errors


async def test_a_service_cannot_listen_to_other_peoples_signals_or_replies(
    connect_as: Connect, uid: str
) -> None:
    nc, errors = await connect_as("transcriber")
    await nc.subscribe(subjects.user_signal(f"u{uid}"))
    await _violation(errors, subjects.user_signal(f"u{uid}"))
    # Nor the replies meant for the gateway's requests.
    theirs = subjects.inboxes_of("gateway")
    await nc.subscribe(theirs)
    await _violation(errors, theirs)


async def test_the_analyst_reads_events_and_publishes_nothing(
    connect_as: Connect, uid: str
) -> None:
    nc, errors = await connect_as("analyst")
    await nc.subscribe(subjects.call_events_of(uid))  # allowed
    await flush_through(nc)
    event = subjects.call_event(uid, "ended")
    await nc.publish(event, b"{}")
    await flush_through(nc)
    await _violation(errors, event)


async def test_a_wrong_password_is_refused(nats_server: NatsServer) -> None:
    # Spoken on a raw socket: nats-py leaves its transport open when a connect is refused.
    reader, writer = await asyncio.open_connection("127.0.0.1", nats_server.port)
    try:
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"INFO ")
        connect = {"user": "gateway", "pass": "not-the-password", "verbose": False}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
        assert answer.startswith(b"-ERR") and b"authorization violation" in answer.lower()
    finally:
        writer.close()
        await writer.wait_closed()


def test_the_generated_configuration_is_valid_for_nats_server(tmp_path: Path) -> None:
    """Both forms: literal passwords (embedded stack, tests) and ``$NATS_<ROLE>_PASSWORD``
    references (deploy/compose), checked by nats-server itself (``-t``)."""
    literal = tmp_path / "literal.conf"
    literal.write_text(
        permissions.server_config(
            {r: f"pw-{r}" for r in permissions.ROLES}, no_auth_user=permissions.ANALYST.name
        )
    )
    env = {permissions.password_variable(r): f"pw-{r}" for r in permissions.ROLES}
    referenced = tmp_path / "referenced.conf"
    referenced.write_text(permissions.server_config(None))
    for conf in (literal, referenced):
        done = subprocess.run(
            [nats_server_path(), "-t", "-c", str(conf)],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert done.returncode == 0, done.stdout + done.stderr


async def test_under_its_role_a_service_provisions_only_what_it_owns() -> None:
    """On a fresh server: the translator bridge owns no stream, so it creates none (not
    the gateway's ``TRANSCRIPTS`` it publishes captions into, nor its ``calls`` bucket),
    and names the resource it waited for in vain."""
    server = NatsServer().start()
    try:
        user, password = server.credentials("translator_bridge")
        settings = BusSettings(
            nats_url=server.url, nats_user=user, nats_password=password, nats_connect_deadline_s=1
        )
        bus = await Bus.connect(settings, "test-provisioning-role")
        try:
            with pytest.raises(ResourceMissing, match=subjects.TRANSCRIPTS_STREAM):
                await provision(bus.js, settings, permissions.TRANSLATOR_BRIDGE)
            for stream in (subjects.TRANSCRIPTS_STREAM, subjects.DEAD_LETTER_STREAM):
                with pytest.raises(nats.js.errors.NotFoundError):
                    await bus.js.stream_info(stream)
        finally:
            await bus.close()
        # Once the owner (here the all-access test user) provisioned everything, it starts.
        admin = await Bus.connect(BusSettings(nats_url=server.url), "test-admin")
        try:
            await provision(admin.js, BusSettings(nats_url=server.url))
        finally:
            await admin.close()
        bus = await Bus.connect(settings, "test-provisioning-role")
        try:
            await provision(bus.js, settings, permissions.TRANSLATOR_BRIDGE)
        finally:
            await bus.close()
        # It never even tried what its user may not do.
        assert server.violations() == []
    finally:
        server.cleanup()


async def test_no_role_pulls_acknowledges_redefines_or_deletes_another_roles_consumer() -> None:
    """The reviewer's probe: the analyst pulled from the archive's durable, acknowledged
    what it took (lost to the archive), and deleted it. Now each request is refused, and
    the archive's consumer still holds every event for the archive."""
    server = NatsServer().start()
    clients: list[Client] = []

    async def connect(role: str) -> tuple[Client, list[Exception]]:
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        user, password = server.credentials(role)
        nc = await nats.connect(
            server.url, user=user, password=password, error_cb=on_error,
            inbox_prefix=subjects.inbox_prefix(user), allow_reconnect=False,
        )  # fmt: skip
        clients.append(nc)
        return nc, errors

    stream = subjects.CALL_EVENTS_STREAM
    durable = subjects.archive_consumer(subjects.ARCHIVE_DURABLE, subjects.ARCHIVE_EVENTS)
    try:
        admin = await Bus.connect(BusSettings(nats_url=server.url), "test-admin")
        await provision(admin.js, BusSettings(nats_url=server.url))
        archive, archive_errors = await connect("archive")
        owned = await archive.jetstream().pull_subscribe(
            subjects.ALL_CALL_EVENTS,
            durable=durable,
            stream=stream,
            config=ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT),
        )
        for name in ("initiated", "ended"):
            await admin.js.publish(subjects.call_event("c1", name), b"{}")

        analyst, analyst_errors = await connect("analyst")
        ajs = analyst.jetstream(timeout=1)
        stolen = await ajs.pull_subscribe_bind(durable, stream=stream)
        with pytest.raises(nats.errors.TimeoutError):
            await stolen.fetch(1, timeout=1)
        await _violation(analyst_errors, subjects.js_consumer_api("MSG.NEXT", stream, durable))
        with pytest.raises(nats.errors.TimeoutError):
            await ajs.delete_consumer(stream, durable)
        await _violation(analyst_errors, f"$JS.API.CONSUMER.DELETE.{stream}.{durable}")
        # Redefining it through the server-named create (the name in the body) is refused.
        with pytest.raises(nats.errors.TimeoutError):
            await ajs.add_consumer(stream, ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
        await _violation(analyst_errors, subjects.js_ephemeral_create(stream))
        ack = f"{subjects.js_acks(stream, durable)[:-2]}.1.1.1.0.0"
        await analyst.publish(ack, b"+ACK")
        await _violation(analyst_errors, ack)

        # Another service cannot pull from the selector's durable either.
        transcriber, transcriber_errors = await connect("transcriber")
        await transcriber.publish(
            subjects.js_consumer_api("MSG.NEXT", stream, subjects.SELECTOR_DURABLE), b"1"
        )
        await _violation(transcriber_errors, subjects.SELECTOR_DURABLE)

        # Nothing was taken from the archive: both events are still its own to read.
        got: list[Msg] = []
        while len(got) < 2:  # a fetch may hand over fewer than it asked for
            got += await owned.fetch(2 - len(got), timeout=5)
        assert [m.subject for m in got] == [
            subjects.call_event("c1", "initiated"),
            subjects.call_event("c1", "ended"),
        ]
        for msg in got:
            await msg.ack_sync()
        assert (await admin.js.consumer_info(stream, durable)).num_ack_pending == 0
        assert archive_errors == []
        await admin.close()
    finally:
        for nc in clients:
            await nc.close()
        server.cleanup()


@pytest.mark.parametrize(
    ("role", "stream"),
    [
        ("media_node", subjects.CALL_EVENTS_STREAM),
        ("selector", subjects.CALL_EVENTS_STREAM),
        ("transcriber", subjects.TRANSCRIPTS_STREAM),
        ("translator_bridge", subjects.TRANSCRIPTS_STREAM),
        ("archive", subjects.DEAD_LETTER_STREAM),
    ],
)
async def test_only_the_gateway_changes_the_durable_streams_settings(
    connect_as: Connect, bus: Bus, role: str, stream: str
) -> None:
    """The reviewer's probe: a media node set ``CALL_EVENTS`` to keep one message. A
    service may look a stream it writes into up, never change it; the gateway may."""
    nc, errors = await connect_as(role)
    js = nc.jetstream(timeout=1)
    info = await js.stream_info(stream)  # allowed: it waits for the stream at start
    kept = info.config.max_msgs
    config = info.config
    config.max_msgs = 1
    with pytest.raises(nats.errors.TimeoutError):
        await js.update_stream(config)
    await _violation(errors, subjects.js_stream_api("UPDATE", stream))
    test_nc, _ = await connect_as("test")
    after = await test_nc.jetstream().stream_info(stream)
    assert after.config.max_msgs == kept != 1
    gateway, gateway_errors = await connect_as("gateway")
    unchanged = (await gateway.jetstream().stream_info(stream)).config
    await gateway.jetstream().update_stream(unchanged)  # the owner may (same settings)
    assert gateway_errors == []
