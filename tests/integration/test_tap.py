"""The analysts' tap against a real nats-server: a recorded call replays in order, filters
hold, a replay exits on its own, and the summary counts what happened."""

import asyncio
import json
import os
import sys

import msgspec

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent
from tests.support.nats_server import NatsServer
from tests.support.recorded_call import RecordedCall, recorded_call


async def tap(nats: NatsServer, *args: str) -> tuple[int, list[str], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemas", "tap", "--nats", nats.url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines(), err.decode()


async def publish(bus: Bus, rec: RecordedCall) -> None:
    for e in rec.events:
        await bus.js_publish(subjects.call_event(e.call_id, e.subject_name), e, msg_id=e.event_id)


def events(lines: list[str]) -> list[AnyCallEvent]:
    return [msgspec.json.decode(line, type=AnyCallEvent) for line in lines]


async def test_the_tap_replays_a_recorded_call_in_order_and_filters(
    nats_server: NatsServer, bus: Bus, uid: str
) -> None:
    first, second = recorded_call(f"a{uid}"), recorded_call(f"b{uid}")
    await publish(bus, first)
    await publish(bus, second)

    code, lines, err = await tap(nats_server, "--call", first.call_id)
    assert code == 0, err
    assert [e.event_id for e in events(lines)] == [e.event_id for e in first.events]

    code, lines, err = await tap(
        nats_server, "--conversation", second.conversation_id, "--type", "participant.joined"
    )
    assert code == 0, err
    joined = events(lines)
    assert [e.call_id for e in joined] == [second.call_id] * 3
    assert {type(e).__name__ for e in joined} == {"ParticipantJoined"}

    code, lines, _ = await tap(nats_server, "--call", first.call_id, "--from-seq", "999999999")
    assert code == 0 and lines == []


async def test_the_summary_counts_the_business_metrics(
    nats_server: NatsServer, bus: Bus, uid: str
) -> None:
    rec = recorded_call(uid)
    await publish(bus, rec)
    code, lines, err = await tap(
        nats_server, "--conversation", rec.conversation_id, "--summary", "--json"
    )
    assert code == 0, err
    summary = json.loads(lines[-1])
    assert summary["calls_started"] == 1 and summary["calls_completed"] == 1
    assert summary["participants"] == {"signed_in": 2, "anonymous": 1, "anonymous_share": 0.333}
    assert summary["transcription"] == {"calls": 1, "usage_rate": 1.0}
    assert summary["mode_switches"]["by_direction_and_outcome"] == {
        "p2p->sfu completed": 1,
        "sfu->p2p completed": 1,
    }
    assert summary["mode_switches"]["duration_ms"]["max"] == 610.0
    code, lines, _ = await tap(nats_server, "--conversation", rec.conversation_id, "--summary")
    assert code == 0 and any(line.startswith("mode switches") for line in lines)


async def test_bad_arguments_and_no_server_are_clear_errors(nats_server: NatsServer) -> None:
    code, _, err = await tap(nats_server, "--type", "call.teleported")
    assert code == 2 and "invalid choice" in err
    code, _, err = await tap(nats_server, "--since", "yesterday-ish")
    assert code == 2 and "not a time" in err
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemas", "tap", "--nats", "nats://127.0.0.1:1",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err_b = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3 and b"no NATS server" in err_b and b"Traceback" not in err_b


async def test_a_republished_revision_is_printed_and_counted_once(
    nats_server: NatsServer, bus: Bus, uid: str
) -> None:
    rec = recorded_call(f"d{uid}")
    await publish(bus, rec)
    # A gateway republishing its outbox past the de-duplication window: same revisions,
    # new event ids, so the stream keeps them twice.
    again = [msgspec.structs.replace(e, event_id=f"again-{i}") for i, e in enumerate(rec.revised)]
    for e in again:
        await bus.js_publish(subjects.call_event(e.call_id, e.subject_name), e, msg_id=e.event_id)
    code, lines, err = await tap(nats_server, "--call", rec.call_id)
    assert code == 0, err
    assert [e.event_id for e in events(lines)] == [e.event_id for e in rec.events]
    assert f"skipped {len(again)} repeated" in err
    code, lines, err = await tap(nats_server, "--call", rec.call_id, "--summary", "--json")
    assert code == 0, err
    summary = json.loads(lines[-1])
    assert summary["calls_started"] == 1 and summary["calls_completed"] == 1
    assert summary["participants"]["signed_in"] == 2


async def test_a_bad_setting_is_one_clear_line(nats_server: NatsServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemas", "tap", "--nats", nats_server.url,
        env={**os.environ, "NATS_CONNECT_DEADLINE_S": "soon"}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, err
    assert err.decode().strip().splitlines() == [
        "tap: environment variable NATS_CONNECT_DEADLINE_S: Expected `float`, got `str`"
    ]
