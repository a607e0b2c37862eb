"""A two-person video call against a running embedded stack (``make run``), step by step.

``python tools/demo_call.py [--gateway URL] [--nats URL]`` logs alice and bob in through the
development token endpoint, has alice call bob in the seeded ``demo-direct`` conversation,
bob accept, both exchange real WebRTC media (aiortc peers, the reusable test client), alice
mute and unmute, then hang up. It prints one line per step and the ``call.evt`` events the
bus carried for the call; exit code 0 when every step worked, 1 (with the step and the
reason) otherwise.
"""

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from schemas import subjects  # noqa: E402
from schemas.bus import Bus, Incoming  # noqa: E402
from schemas.call_events import AnyCallEvent, CallEnded  # noqa: E402
from schemas.settings import BusSettings  # noqa: E402
from tests.support.call_client import CallClient  # noqa: E402

T = TypeVar("T")
Payload = dict[str, Any]

DEFAULT_GATEWAY = f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8000')}"
DEFAULT_NATS = os.environ.get(
    "NATS_URL", f"nats://127.0.0.1:{os.environ.get('STACK_NATS_PORT', '4222')}"
)


class StepFailed(Exception):
    """A step of the demo did not happen; the message says what was expected."""


def say(label: str, text: str) -> None:
    print(f"  ok  {label:<15} {text}", flush=True)


@dataclass
class EventWatch:
    """Every ``call.evt`` event of one call, in the order the bus delivered them."""

    call_id: str | None = None
    events: list[Any] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, event: Any, _: Incoming) -> None:
        # The call id is known only once the initiate is answered, after its first events
        # went out: keep everything until then, filter when reading.
        if self.call_id is None or event.call_id == self.call_id:
            self.events.append(event)
            self.changed.set()

    def of_call(self) -> list[Any]:
        return [e for e in self.events if e.call_id == self.call_id]

    async def until_ended(self, timeout: float) -> None:
        async def until() -> None:
            while not any(isinstance(e, CallEnded) for e in self.of_call()):
                self.changed.clear()
                await self.changed.wait()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until(), timeout)


def describe(event: Any) -> str:
    """One event as ``tag  key=value ...`` (ids shortened)."""
    tag = type(event).__struct_config__.tag
    details = []
    for name in ("from_status", "to_status", "reason", "outcome", "audio_enabled", "active_count"):
        value = getattr(event, name, None)
        if value is not None:
            details.append(f"{name}={value}")
    if hasattr(event, "participant"):
        details.append(f"participant={event.participant.display_name or '?'}")
    if hasattr(event, "user_ids"):
        details.append(f"users={','.join(event.user_ids)}")
    return f"{tag:<28} {' '.join(details)}".rstrip()


class Demo:
    """The steps of the call; each raises :class:`StepFailed` with a readable reason."""

    def __init__(self, gateway: str, nats_url: str | None, conversation: str, timeout: float):
        self.gateway = gateway.rstrip("/")
        self.nats_url = nats_url
        self.conversation = conversation
        self.timeout = timeout
        self.alice: CallClient | None = None
        self.bob: CallClient | None = None
        self.bus: Bus | None = None
        self.watch = EventWatch()

    async def step(self, name: str, action: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(action, self.timeout)
        except StepFailed:
            raise
        except TimeoutError:
            raise StepFailed(f"{name}: nothing happened within {self.timeout:.0f}s") from None
        except AssertionError as exc:  # the call client's "expected X, saw Y"
            raise StepFailed(f"{name}: {exc}") from None
        except (httpx.HTTPError, OSError) as exc:
            raise StepFailed(f"{name}: {type(exc).__name__}: {exc}") from None

    # --- steps -------------------------------------------------------------------------
    async def login(self) -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=self.gateway, timeout=5) as http:
            try:
                ready = await http.get("/readyz")
            except httpx.ConnectError:
                raise StepFailed(
                    f"no gateway answers at {self.gateway}: start the stack with `make run` "
                    "(or pass --gateway URL)"
                ) from None
            if ready.status_code != 200:
                raise StepFailed(f"the gateway is not ready: {ready.json().get('reasons')}")
            tokens = []
            for user, name in (("alice", "Alice"), ("bob", "Bob")):
                resp = await http.post(
                    "/api/dev/token", json={"userId": user, "displayName": name, "language": "en"}
                )
                if resp.status_code == 404:
                    raise StepFailed(
                        "the gateway refuses dev tokens (DEV_TOKENS_ENABLED is off); the demo "
                        "needs the embedded stack started by `make run`"
                    )
                resp.raise_for_status()
                tokens.append(str(resp.json()["token"]))
        return tokens[0], tokens[1]

    async def watch_events(self) -> None:
        if self.nats_url is None:
            return
        settings = BusSettings(nats_url=self.nats_url, nats_connect_deadline_s=3)
        try:
            self.bus = await Bus.connect(settings, "demo-call")
        except Exception:
            raise StepFailed(
                f"no NATS at {self.nats_url} to watch call.evt (pass --nats URL, or --no-events)"
            ) from None
        await self.bus.subscribe(subjects.ALL_CALL_EVENTS, AnyCallEvent, self.watch)
        await self.bus.flush()

    async def connect(self, alice_token: str, bob_token: str) -> None:
        self.alice = await CallClient.connect(self.gateway, alice_token, name="alice")
        self.bob = await CallClient.connect(self.gateway, bob_token, name="bob")

    async def ring(self) -> Payload:
        alice, bob = self._clients()
        ack = await alice.request(
            "call:initiate", {"conversationId": self.conversation, "media": "video"}
        )
        error = ack.get("error") or {}
        if not ack.get("ok") and error.get("code") == "conflict" and error.get("activeCallId"):
            # A previous run left a call behind: hang it up, then call again.
            await self._end_leftover(str(error["activeCallId"]))
            ack = await alice.request(
                "call:initiate", {"conversationId": self.conversation, "media": "video"}
            )
        if not ack.get("ok"):
            raise StepFailed(f"alice could not start the call: {ack.get('error')}")
        alice.call_id = ack["call"]["callId"]
        alice.participant_id = ack["participantId"]
        alice.resume_token = ack.get("resumeToken")
        self.watch.call_id = alice.call_id
        alice.start_heartbeats(float(ack.get("heartbeatIntervalS", 5)))
        return await bob.wait_for(
            "call:incoming", lambda p: p.get("callId") == alice.call_id, self.timeout
        )

    async def _end_leftover(self, call_id: str) -> None:
        alice, _ = self._clients()
        async with httpx.AsyncClient(base_url=self.gateway, timeout=5) as http:
            await http.delete(
                f"/api/calls/{call_id}", headers={"Authorization": f"Bearer {alice.token}"}
            )

    async def accept(self, call_id: str) -> Payload:
        alice, bob = self._clients()
        ack = await bob.accept(call_id)
        bob.start_heartbeats(float(ack.get("heartbeatIntervalS", 5)))
        return await alice.wait_for("call:accepted", timeout=self.timeout)

    async def negotiate(self) -> tuple[Payload, Payload]:
        alice, bob = self._clients()
        offer = await bob.wait_for("call:signal", lambda p: p.get("type") == "offer")
        answer = await alice.wait_for("call:signal", lambda p: p.get("type") == "answer")
        return offer, answer

    async def media(self) -> None:
        alice, bob = self._clients()
        await asyncio.gather(alice.wait_media(min_frames=20), bob.wait_media(min_frames=20))

    async def mute(self) -> tuple[Payload, Payload]:
        alice, bob = self._clients()
        await alice.toggle_audio(False)
        muted = await bob.wait_for(
            "call:media-toggled", lambda p: p.get("audioEnabled") is False, self.timeout
        )
        await alice.toggle_audio(True)
        unmuted = await bob.wait_for(
            "call:media-toggled", lambda p: p.get("audioEnabled") is True, self.timeout
        )
        return muted, unmuted

    async def hang_up(self) -> Payload:
        alice, bob = self._clients()
        await alice.end()
        ended = await bob.wait_for("call:ended", timeout=self.timeout)
        await alice.wait_for("call:ended", timeout=self.timeout)
        return ended

    def _clients(self) -> tuple[CallClient, CallClient]:
        if self.alice is None or self.bob is None:
            raise StepFailed("the clients are not connected")
        return self.alice, self.bob

    async def close(self) -> None:
        for client in (self.alice, self.bob):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 10)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()


async def run(demo: Demo) -> None:
    started = time.monotonic()
    print(f"demo: gateway {demo.gateway}, conversation {demo.conversation}", flush=True)
    alice_token, bob_token = await demo.step("log in", demo.login())
    say("logged in", "alice and bob, through POST /api/dev/token")
    await demo.step("watch call.evt", demo.watch_events())
    if demo.bus is not None:
        say("watching", f"{subjects.ALL_CALL_EVENTS} on {demo.nats_url}")
    await demo.step("connect", demo.connect(alice_token, bob_token))
    say("connected", "two Socket.IO connections (each with an aiortc peer)")
    incoming = await demo.step("ringing", demo.ring())
    caller = incoming.get("caller", {}).get("displayName", "?")
    say("ringing", f"{caller} calls bob: {incoming['callId']}, bob gets call:incoming")
    accepted = await demo.step("accepted", demo.accept(incoming["callId"]))
    callee = accepted.get("callee", {}).get("displayName", "?")
    say("accepted", f"{callee} accepted; alice gets call:accepted, the call is active (p2p)")
    offer, answer = await demo.step("offer/answer", demo.negotiate())
    say(
        "offer/answer",
        f"alice -> bob offer ({len(offer['sdp'])} B SDP), "
        f"bob -> alice answer ({len(answer['sdp'])} B SDP), relayed by the gateway",
    )
    await demo.step("media", demo.media())
    alice, bob = demo._clients()
    say(
        "media flowing",
        f"alice received audio={alice.frames('audio')} video={alice.frames('video')} frames; "
        f"bob received audio={bob.frames('audio')} video={bob.frames('video')} frames",
    )
    await demo.step("mute", demo.mute())
    say("mute seen", "alice muted then unmuted; bob got call:media-toggled audioEnabled=false/true")
    ended = await demo.step("hang-up", demo.hang_up())
    say("hung up", f"alice ended the call; bob got call:ended reason={ended.get('reason')}")
    if demo.bus is not None:
        await demo.watch.until_ended(demo.timeout)
        events = demo.watch.of_call()
        kinds = {type(e).__struct_config__.tag for e in events}
        missing = {"call.initiated", "call.ringing", "media.state_changed", "call.ended"} - kinds
        if missing:
            raise StepFailed(f"call.evt: the bus never carried {sorted(missing)} for this call")
        say("call.evt", f"{len(events)} events on the bus for this call:")
        for event in events:
            print(f"        {describe(event)}", flush=True)
    print(f"demo: the two-person call worked ({time.monotonic() - started:.1f}s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--gateway", default=DEFAULT_GATEWAY, help="gateway URL")
    parser.add_argument("--nats", default=DEFAULT_NATS, help="NATS URL, to show call.evt")
    parser.add_argument("--no-events", action="store_true", help="do not watch call.evt")
    parser.add_argument("--conversation", default="demo-direct", help="a DIRECT conversation")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per step")
    args = parser.parse_args(argv)
    nats_url = None if args.no_events else args.nats
    demo = Demo(args.gateway, nats_url, args.conversation, args.timeout)

    async def guarded() -> int:
        try:
            await run(demo)
            return 0
        except StepFailed as exc:
            print(f"demo: FAILED: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            await demo.close()

    return asyncio.run(guarded())


if __name__ == "__main__":
    sys.exit(main())
