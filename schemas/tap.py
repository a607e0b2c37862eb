"""``python -m schemas tap`` (or ``meeshy-tap``): read the call event stream as an analyst.

Replays ``CALL_EVENTS`` (everything kept, or from ``--since TIME`` / ``--from-seq N``),
optionally keeps following it (``--follow``), filters by call, conversation or event type,
and prints one event per line as JSON (JSON Lines), decoded and validated through the
catalogue, exactly as the JSON Schema (``python -m schemas export``) describes it. A replay
exits 0 at the end of the stream. ``--summary`` prints the design document's business
metrics over the same selection instead.

Examples::

    meeshy-tap --since 2026-03-01T00:00:00Z --type call.ended > ended.jsonl
    meeshy-tap --call call-123                 # one call, in order
    meeshy-tap --conversation grp-7 --follow   # a conversation's calls, then live
    meeshy-tap --since 24h --summary           # yesterday's figures
"""

import argparse
import asyncio
import contextlib
import re
import statistics
import sys
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import msgspec
import nats
import nats.errors
import nats.js.errors

from schemas import subjects
from schemas.call_events import (
    CALL_EVENT_TYPES,
    AnyCallEvent,
    CallEnded,
    CallInitiated,
    CallModeChanged,
    ParticipantJoined,
    TranscriptionChanged,
)
from schemas.codec import decoder_for, encode
from schemas.errors import SettingsError
from schemas.permissions import ANALYST
from schemas.settings import BusSettings, redact_url

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_SERVER = 3

#: Every event type tag, e.g. ``participant.joined``.
EVENT_TAGS: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in CALL_EVENT_TYPES)
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """RFC 3339 (``2026-03-01T09:00:00Z``) or an age (``90s``, ``15m``, ``24h``, ``7d``)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (RFC 3339, or an age like 15m, 24h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class Selection:
    """Which events an analyst asked for."""

    call_id: str | None = None
    conversation_id: str | None = None
    types: frozenset[str] = frozenset()
    until: datetime | None = None
    #: Calls of ``conversation_id`` (filled by a pre-scan of ``call.initiated`` and live).
    calls: set[str] = field(default_factory=set)

    def wants(self, event: AnyCallEvent) -> bool:
        if self.conversation_id is not None:
            if isinstance(event, CallInitiated) and event.conversation_id == self.conversation_id:
                self.calls.add(event.call_id)
            if event.call_id not in self.calls:
                return False
        if self.types and type(event).__struct_config__.tag not in self.types:
            return False
        return self.until is None or event.occurred_at <= self.until


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Summary:
    """The design document's business metrics over a set of events (pure; feed, then read)."""

    calls_started: int = 0
    ended_by_reason: Counter[str] = field(default_factory=Counter)
    durations_s: list[float] = field(default_factory=list)
    signed_in: set[str] = field(default_factory=set)
    anonymous: set[str] = field(default_factory=set)
    transcribed_calls: set[str] = field(default_factory=set)
    switches: Counter[str] = field(default_factory=Counter)
    switch_ms: list[float] = field(default_factory=list)
    switch_failures: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None

    def add(self, event: AnyCallEvent) -> None:
        self.first = min(self.first or event.occurred_at, event.occurred_at)
        self.last = max(self.last or event.occurred_at, event.occurred_at)
        match event:
            case CallInitiated():
                self.calls_started += 1
            case CallEnded():
                self.ended_by_reason[event.reason] += 1
                if event.reason == "completed":
                    self.durations_s.append(event.duration_s)
            case ParticipantJoined(participant=p):
                who = p.principal_id or p.user_id or p.participant_id
                (self.anonymous if p.kind == "guest" else self.signed_in).add(who)
            case TranscriptionChanged(enabled=True):
                self.transcribed_calls.add(event.call_id)
            case CallModeChanged():
                self.switches[f"{event.from_mode}->{event.to_mode} {event.outcome}"] += 1
                if event.outcome == "completed":
                    self.switch_ms.append(event.duration_ms)
                else:
                    self.switch_failures[event.reason] += 1
            case _:
                pass

    def as_dict(self) -> dict[str, Any]:
        completed = self.ended_by_reason.get("completed", 0)
        failures = {r: n for r, n in sorted(self.ended_by_reason.items()) if r != "completed"}
        people = len(self.signed_in) + len(self.anonymous)
        return {
            "from": self.first.isoformat() if self.first else None,
            "to": self.last.isoformat() if self.last else None,
            "calls_started": self.calls_started,
            "calls_completed": completed,
            "calls_ended": sum(self.ended_by_reason.values()),
            "failed_by_reason": failures,
            "duration_s": {
                "mean": _round(statistics.fmean(self.durations_s)) if self.durations_s else None,
                "p50": _round(_pct(self.durations_s, 0.5)),
                "p95": _round(_pct(self.durations_s, 0.95)),
            },
            "participants": {
                "signed_in": len(self.signed_in),
                "anonymous": len(self.anonymous),
                "anonymous_share": _round(len(self.anonymous) / people) if people else None,
            },
            "transcription": {
                "calls": len(self.transcribed_calls),
                "usage_rate": _round(len(self.transcribed_calls) / self.calls_started)
                if self.calls_started
                else None,
            },
            "mode_switches": {
                "by_direction_and_outcome": dict(sorted(self.switches.items())),
                "failed_by_reason": dict(sorted(self.switch_failures.items())),
                "duration_ms": {
                    "p50": _round(_pct(self.switch_ms, 0.5), 1),
                    "p95": _round(_pct(self.switch_ms, 0.95), 1),
                    "max": _round(max(self.switch_ms), 1) if self.switch_ms else None,
                },
            },
        }

    def lines(self) -> Iterable[str]:
        d = self.as_dict()
        yield f"period             {d['from']} .. {d['to']}"
        yield (
            f"calls              {d['calls_started']} started, {d['calls_completed']} completed,"
            f" {d['calls_ended']} ended"
        )
        failed = ", ".join(f"{r} {n}" for r, n in d["failed_by_reason"].items()) or "none"
        yield f"not completed      {failed}"
        dur = d["duration_s"]
        yield f"duration (s)       mean {dur['mean']}  p50 {dur['p50']}  p95 {dur['p95']}"
        p = d["participants"]
        yield (
            f"participants       {p['signed_in']} signed in, {p['anonymous']} anonymous"
            f" (share {p['anonymous_share']})"
        )
        t = d["transcription"]
        yield f"transcription      {t['calls']} calls (usage rate {t['usage_rate']})"
        m = d["mode_switches"]
        by = ", ".join(f"{k} {n}" for k, n in m["by_direction_and_outcome"].items()) or "none"
        yield f"mode switches      {by}"
        ms = m["duration_ms"]
        yield f"switch time (ms)   p50 {ms['p50']}  p95 {ms['p95']}  max {ms['max']}"


class Seen:
    """The revisions already printed (or counted), bounded: the oldest are forgotten first.

    A revision is ``(call_id, seq)``: a gateway that republishes a pending outbox entry
    outside the stream's de-duplication window stores the same revision again under a new
    event id. Advisory events (``seq`` 0) are keyed by their event id.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[tuple[str, int | str], None] = OrderedDict()
        self.duplicates = 0

    def first_time(self, event: AnyCallEvent) -> bool:
        key: tuple[str, int | str] = (event.call_id, event.seq or event.event_id)
        if key in self._keys:
            self.duplicates += 1
            return False
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True


class _StoredMessage(msgspec.Struct, frozen=True):
    seq: int
    subject: str = ""
    data: bytes = b""  # base64 in JSON, decoded by msgspec


class _ApiError(msgspec.Struct, frozen=True):
    code: int
    description: str = ""


class _MsgGetResponse(msgspec.Struct, frozen=True):
    """``$JS.API.STREAM.MSG.GET`` answer: a message, or an error (404: none further)."""

    message: _StoredMessage | None = None
    error: _ApiError | None = None


_NOT_FOUND = 404
#: A follower re-reads at least this often, even without a live event to wake it.
_FOLLOW_POLL_S = 1.0


class Tap:
    """One replay (and optional follow) of ``CALL_EVENTS``, read message by message.

    The tap runs as the read-only ``analyst`` role, which may run no consumer
    (``schemas/permissions.py``): it asks the stream for the next message on its subject
    after the last one it read (``MSG.GET`` with ``next_by_subj``), in stream order, and
    while following waits for a live event on that subject (a core subscription, used
    only as a wake-up) before asking again.
    """

    def __init__(self, nc: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.args = args
        self.out = out
        self.err = err
        self.undecodable = 0
        self.printed = 0
        self.seen = Seen()
        self._responses: msgspec.json.Decoder[_MsgGetResponse] = msgspec.json.Decoder(
            _MsgGetResponse
        )

    async def _next(self, request: dict[str, object]) -> _StoredMessage | None:
        """The first message the request names, ``None`` when there is none (yet)."""
        reply = await self.nc.request(
            subjects.js_stream_api("MSG.GET", subjects.CALL_EVENTS_STREAM),
            msgspec.json.encode(request),
            timeout=5,
        )
        answer = self._responses.decode(reply.data)
        if answer.error is not None:
            if answer.error.code == _NOT_FOUND:
                return None
            raise nats.js.errors.APIError(
                code=answer.error.code, description=answer.error.description
            )
        return answer.message

    async def _first_request(self, filter_subject: str) -> dict[str, object]:
        a = self.args
        if a.from_seq is not None:
            return {"seq": max(1, a.from_seq), "next_by_subj": filter_subject}
        if a.since is not None:
            since = a.since.astimezone(UTC).isoformat().replace("+00:00", "Z")
            return {"start_time": since, "next_by_subj": filter_subject}
        if a.new:
            info = await self.js.stream_info(subjects.CALL_EVENTS_STREAM)
            return {"seq": info.state.last_seq + 1, "next_by_subj": filter_subject}
        return {"seq": 1, "next_by_subj": filter_subject}

    async def events(self, filter_subject: str, *, follow: bool) -> Any:
        """Yield ``(stream_seq, event)`` in stream order; stop at the end unless following."""
        decoder: msgspec.json.Decoder[AnyCallEvent] = decoder_for(AnyCallEvent)
        woken = asyncio.Event()

        async def wake(_: Any) -> None:
            woken.set()

        # Subscribed before the start is fixed, so no live event slips between the two.
        sub = await self.nc.subscribe(filter_subject, cb=wake) if follow else None
        try:
            request = await self._first_request(filter_subject)
            while True:
                woken.clear()
                stored = await self._next(request)
                if stored is None:
                    if not follow:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), _FOLLOW_POLL_S)
                    continue
                request = {"seq": stored.seq + 1, "next_by_subj": filter_subject}
                try:
                    event = decoder.decode(stored.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.undecodable += 1
                    print(
                        f"tap: skipped message {stored.seq} on {stored.subject}: {exc}",
                        file=self.err,
                    )
                else:
                    yield stored.seq, event
        finally:
            if sub is not None:
                await sub.unsubscribe()

    async def calls_of(self, conversation_id: str) -> set[str]:
        """Every call of a conversation still in the stream (a pre-scan of initiations)."""
        found: set[str] = set()
        subject = subjects.call_events_named(CallInitiated.subject_name)
        saved = self.args.since, self.args.from_seq, self.args.new
        self.args.since, self.args.from_seq, self.args.new = None, None, False
        try:
            async for _, event in self.events(subject, follow=False):
                if isinstance(event, CallInitiated) and event.conversation_id == conversation_id:
                    found.add(event.call_id)
        finally:
            self.args.since, self.args.from_seq, self.args.new = saved
        return found

    async def run(self) -> int:
        a = self.args
        selection = Selection(
            call_id=a.call,
            conversation_id=a.conversation,
            types=frozenset(a.type or ()),
            until=a.until,
        )
        if a.conversation:
            selection.calls = await self.calls_of(a.conversation)
        subject = subjects.call_events_of(a.call) if a.call else subjects.ALL_CALL_EVENTS
        summary = Summary() if a.summary else None
        follow = (a.follow or a.new) and summary is None
        async for _, event in self.events(subject, follow=follow):
            if a.until is not None and event.occurred_at > a.until and not follow:
                break
            if not selection.wants(event) or not self.seen.first_time(event):
                continue
            if summary is not None:
                summary.add(event)
            else:
                self.out.write(encode(event).decode() + "\n")
                self.out.flush()
                self.printed += 1
        if self.seen.duplicates:
            print(
                f"tap: skipped {self.seen.duplicates} repeated revision(s) (same call and seq)",
                file=self.err,
            )
        if summary is not None:
            if a.json:
                self.out.write(msgspec.json.encode(summary.as_dict()).decode() + "\n")
            else:
                for line in summary.lines():
                    self.out.write(line + "\n")
        return EXIT_OK


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="meeshy-tap",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--nats", help="server URL(s), default NATS_URL (then NATS_USER...)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--since", type=parse_time, help="from this time (RFC 3339 or 24h)")
    start.add_argument("--from-seq", type=int, help="from this stream sequence")
    start.add_argument("--new", action="store_true", help="only events from now on")
    parser.add_argument("--until", type=parse_time, help="stop at events after this time")
    parser.add_argument("--follow", "-f", action="store_true", help="keep reading live events")
    parser.add_argument("--call", help="only this call")
    parser.add_argument("--conversation", help="only calls of this conversation")
    parser.add_argument(
        "--type", action="append", choices=EVENT_TAGS, metavar="TYPE",
        help="only this event type (repeatable), e.g. participant.joined",
    )  # fmt: skip
    parser.add_argument("--summary", action="store_true", help="business metrics instead")
    parser.add_argument("--json", action="store_true", help="the summary as one JSON object")
    return parser


async def _quiet(_: Exception) -> None:
    """nats-py would print each failed attempt; the tap reports once, below."""


async def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        settings = BusSettings.from_env()
    except SettingsError as exc:  # one clear line, not a traceback
        print(f"tap: {exc}", file=err)
        return EXIT_USAGE
    servers = [s.strip() for s in (args.nats or settings.nats_url).split(",") if s.strip()]
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=servers,
                user=settings.nats_user,
                password=settings.nats_password,
                token=settings.nats_token,
                # The tap runs as the read-only analyst role (schemas/permissions.py); with
                # no user (the embedded stack's anonymous analyst), its inboxes all the same.
                inbox_prefix=subjects.inbox_prefix(settings.effective_user() or ANALYST.name),
                connect_timeout=3,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                name="meeshy-tap",
                error_cb=_quiet,
            ),
            timeout=3 + 2 * len(servers),
        )
    except Exception as exc:  # nats-py raises several unrelated types here
        shown = ", ".join(redact_url(s) for s in servers)
        print(f"tap: no NATS server answered at {shown} ({type(exc).__name__})", file=err)
        return EXIT_NO_SERVER
    try:
        return await Tap(nc, args, out, err).run()
    except nats.js.errors.NotFoundError:
        print(f"tap: the stream {subjects.CALL_EVENTS_STREAM} does not exist here", file=err)
        return EXIT_NO_SERVER
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `meeshy-tap | head`
        return EXIT_OK
