"""Archive throughput: call events written one by one, in batches, and in batches from
memory, in the same run.

Starts its own nx-27017 (the embedded stack's MongoDB wire-protocol server, free port) and
feeds :class:`gateway.archive.writer.ArchiveWriter` the events of ``--calls`` churning GROUP
calls, interleaved as a busy bus delivers them: each call is initiated, then its six
members join and leave it in turn ``--rounds`` times (its log grows to ``2 * rounds + 3``
events), like the churn of ``bench/load.py`` part 3, whose archive fell behind.

- ``one_by_one``: ``on_event`` per event, remembering nothing (the archive before
  batching: log it, read the call's whole log, fold, write);
- ``batched_reading``: ``on_events`` per ``--batch`` events, remembering nothing (one
  insert, one read of the batch's calls' logs, one fold per call, one bulk write per
  collection);
- ``batched``: the same, with the writer's memory of the calls it folded
  (``ARCHIVE_CACHE_EVENTS``): a count of each call's logged events instead of reading the
  logs back. This is what the archive runs.

Each round runs the three on fresh databases, in rotating order, so a noisy moment of the
machine weighs on all; the figure is the median over rounds. CPU is counted apart for this
process (the archive) and for the database server (nx-27017). All modes must leave the same
documents.

The last line is one JSON object: ``archive_events_per_s_<mode>`` (medians),
``archive_batch_speedup`` (batched against one by one) and ``archive_cache_speedup``
(batched against batched_reading), each the median of the paired ratios with its spread,
``archive_cpu_ms_per_event_<mode>`` and ``database_cpu_ms_per_event_<mode>``,
``documents_equal``, and
``keeps_up_with_load_bench_churn`` (the batched rate is above the 633 events/s that
``bench/load.py`` part 3 produced at most).
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from gateway.archive import repository as r
from gateway.archive.repository import ArchiveRepository
from gateway.archive.writer import CACHE_EVENTS, ArchiveWriter
from schemas.call_events import (
    AnyCallEvent,
    CallInitiated,
    CallStatusChanged,
    Participant,
    ParticipantJoined,
    ParticipantLeft,
)
from schemas.codec import encode
from tests.support.delivered import Delivered
from tests.support.mongo_server import MongoServer

#: The most events/s the churn of ``bench/load.py`` part 3 reached (its note).
LOAD_BENCH_CHURN_PER_S = 633.0
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


#: People in a call's conversation, who join and leave it in turn (as in ``bench/load.py``
#: part 3): each join is a new participant of one of them.
MEMBERS = 6


def churn_call(index: int, rounds: int) -> list[AnyCallEvent]:
    """One GROUP call: initiated, active, then ``rounds`` times a member joins and leaves."""
    call = f"bench-call-{index:04d}"

    def person(n: int) -> Participant:
        member = n % MEMBERS
        return Participant(
            participant_id=f"p{index}-{n}",
            kind="user",
            user_id=f"u{index}-{member}",
            principal_id=f"u{index}-{member}",
            display_name=f"Member {member}",
        )

    seq = iter(range(1, 10_000))
    at = iter(T0 + timedelta(seconds=s) for s in range(10_000))
    events: list[AnyCallEvent] = [
        CallInitiated(
            call_id=call,
            seq=next(seq),
            occurred_at=next(at),
            conversation_id=f"grp-{index}",
            conversation_type="GROUP",
            initiator=person(0),
        ),
        ParticipantJoined(
            call_id=call, seq=next(seq), occurred_at=next(at), participant=person(0), active_count=1
        ),
        CallStatusChanged(
            call_id=call,
            seq=next(seq),
            occurred_at=next(at),
            from_status="initiated",
            to_status="active",
        ),
    ]
    for n in range(1, rounds + 1):
        events.append(
            ParticipantJoined(
                call_id=call,
                seq=next(seq),
                occurred_at=next(at),
                participant=person(n),
                active_count=2,
            )
        )
        events.append(
            ParticipantLeft(
                call_id=call,
                seq=next(seq),
                occurred_at=next(at),
                participant_id=f"p{index}-{n}",
                reason="left",
                active_count=1,
            )
        )
    return events


def interleaved(calls: int, rounds: int) -> list[tuple[AnyCallEvent, Delivered]]:
    """Every call's events, one of each call in turn, as stream messages."""
    per_call = [churn_call(i, rounds) for i in range(calls)]
    order = [c[k] for k in range(max(map(len, per_call))) for c in per_call if k < len(c)]
    return [
        (e, Delivered(i + 1, encode(e), T0 + timedelta(milliseconds=i)))
        for i, e in enumerate(order)
    ]


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds of another process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_mode(
    server: MongoServer,
    database: str,
    mode: str,
    delivered: list[tuple[AnyCallEvent, Delivered]],
    batch: int,
) -> tuple[float, float, float, dict[str, Any]]:
    """(events/s, archive and database CPU ms per event, the sessions written) for one mode
    on a fresh database."""
    assert server.process is not None
    pid = server.process.pid
    repo = ArchiveRepository.connect(server.url, database)
    try:
        await repo.ensure_indexes()
        memory = CACHE_EVENTS if mode == "batched" else 0
        writer = ArchiveWriter(repo, accepting=lambda: True, cache_events=memory)
        cpu, wall, db_cpu = time.process_time(), time.perf_counter(), process_cpu_s(pid)
        if mode == "one_by_one":
            for event, msg in delivered:
                await writer.on_event(event, msg)  # type: ignore[arg-type]
        else:
            for at in range(0, len(delivered), batch):
                await writer.on_events(delivered[at : at + batch])  # type: ignore[arg-type]
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        db_cpu = process_cpu_s(pid) - db_cpu
        assert writer.events_logged == len(delivered)
        sessions = {
            d["_id"]: msgspec.to_builtins(await repo.session(d["_id"]), builtin_types=(datetime,))
            for d in await repo.dump(r.SESSIONS)
        }
        n = len(delivered)
        return n / wall, cpu * 1000 / n, db_cpu * 1000 / n, sessions
    finally:
        await repo.db.client.drop_database(database)
        repo.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    delivered = interleaved(args.calls, args.rounds)
    print(
        f"{args.calls} calls x {2 * args.rounds + 3} events = {len(delivered)} events, "
        f"batches of {args.batch}, {args.repeat} rounds"
    )
    server = MongoServer().start()
    modes = ["one_by_one", "batched_reading", "batched"]
    rates: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    db_cpus: dict[str, list[float]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {"batch": [], "cache": []}
    equal = True
    try:
        for n in range(args.repeat):
            seen: dict[str, dict[str, Any]] = {}
            for mode in modes[n % 3 :] + modes[: n % 3]:
                rate, cpu, db_cpu, sessions = await run_mode(
                    server, f"bench_{n}_{mode}", mode, delivered, args.batch
                )
                rates[mode].append(rate)
                cpus[mode].append(cpu)
                db_cpus[mode].append(db_cpu)
                seen[mode] = sessions
                print(
                    f"round {n + 1} {mode:>15}: {rate:7.1f} events/s, CPU per event "
                    f"{cpu:5.2f} ms archive, {db_cpu:5.2f} ms database"
                )
            equal = equal and seen["one_by_one"] == seen["batched_reading"] == seen["batched"]
            ratios["batch"].append(rates["batched"][-1] / rates["one_by_one"][-1])
            ratios["cache"].append(rates["batched"][-1] / rates["batched_reading"][-1])
    finally:
        server.cleanup()
    batched = statistics.median(rates["batched"])
    result: dict[str, Any] = {"calls": args.calls, "events": len(delivered), "batch": args.batch}
    for mode in modes:
        result[f"archive_events_per_s_{mode}"] = round(statistics.median(rates[mode]), 1)
    for name, paired in ratios.items():
        result[f"archive_{name}_speedup"] = round(statistics.median(paired), 2)
        result[f"archive_{name}_speedup_spread"] = [round(min(paired), 2), round(max(paired), 2)]
    for mode in modes:
        result[f"archive_cpu_ms_per_event_{mode}"] = round(statistics.median(cpus[mode]), 3)
    for mode in modes:
        result[f"database_cpu_ms_per_event_{mode}"] = round(statistics.median(db_cpus[mode]), 3)
    result["documents_equal"] = equal
    result["keeps_up_with_load_bench_churn"] = batched > LOAD_BENCH_CHURN_PER_S
    print(
        f"batched {result['archive_batch_speedup']}x one by one "
        f"(rounds {result['archive_batch_speedup_spread']}), "
        f"{result['archive_cache_speedup']}x batched reading the logs back "
        f"(rounds {result['archive_cache_speedup_spread']}); same documents: {equal}"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=20, help="joins and leaves per call")
    parser.add_argument("--batch", type=int, default=256, help="ARCHIVE_BATCH_EVENTS")
    parser.add_argument("--repeat", type=int, default=3)
    out = asyncio.run(main(parser.parse_args()))
    print(json.dumps(out))
