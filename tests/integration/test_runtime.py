"""The shared service runtime, in process: draining waits for work in hand."""

import asyncio
import os
import signal
import sys

from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.call_events import CallEnded
from schemas.runtime import Service, run_service
from schemas.settings import ServiceSettings
from tests.support.nats_server import NatsServer
from tests.support.processes import HeartbeatWatch


class SlowWorker(Service[ServiceSettings]):
    """Takes 0.5 s per message; counts what it finished."""

    kind = "transcriber"

    def __init__(self, settings: ServiceSettings, service_id: str) -> None:
        super().__init__(settings, service_id)
        self.started_work = asyncio.Event()
        self.finished = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self, bus: Bus) -> None:
        async def work(evt: CallEnded, _: Incoming) -> None:
            with self.in_flight:
                self.started_work.set()
                await asyncio.sleep(0.5)
                self.finished += 1

        # A task per message so work overlaps with the drain signal.
        async def on_message(evt: CallEnded, inc: Incoming) -> None:
            if self.accepting:
                task = asyncio.create_task(work(evt, inc))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

        self.sub = await bus.subscribe(f"test.work.{self.service_id}", CallEnded, on_message)

    async def stop_accepting(self) -> None:
        await super().stop_accepting()
        await self.sub.unsubscribe()


async def test_drain_finishes_work_in_hand_then_stops(
    bus: Bus, nats_server: NatsServer, uid: str
) -> None:
    settings = ServiceSettings(
        nats_url=nats_server.url, heartbeat_interval_s=0.2, drain_timeout_s=5
    )
    worker = SlowWorker(settings, f"worker-{uid}")
    watch = await HeartbeatWatch.start(bus, "transcriber", worker.service_id)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_service(worker, stop))
    await watch.wait_state("ready")

    await bus.publish(f"test.work.{worker.service_id}", CallEnded(call_id=uid, reason="completed"))
    await asyncio.wait_for(worker.started_work.wait(), 5)
    stop.set()  # what SIGTERM does

    assert await asyncio.wait_for(runner, 10) == 0
    assert worker.finished == 1  # the message in hand was finished, not dropped
    draining = await watch.wait_state("draining")
    assert draining.load.in_flight == 1
    assert subjects.service_heartbeat("transcriber", worker.service_id)


_STUCK_SERVICE = """
import sys, threading
from concurrent.futures import ThreadPoolExecutor
from schemas.runtime import Service, launch
from schemas.settings import ServiceSettings

never = threading.Event()

class Stuck(Service[ServiceSettings]):
    kind = "transcriber"

    async def start(self, bus):
        self.pool = ThreadPoolExecutor(1)
        self.pool.submit(never.wait)  # a model call that never returns
        print("STARTED", flush=True)

    async def close(self):
        self.pool.shutdown(wait=False)
        self.abandoned_threads = True

sys.exit(launch(Stuck, ServiceSettings))
"""


async def test_a_service_that_abandoned_a_stuck_thread_still_exits(
    nats_server: NatsServer,
) -> None:
    """concurrent.futures joins its threads at interpreter exit; a service that gave up on
    a wedged call (``abandoned_threads``) must end anyway, with its exit code."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _STUCK_SERVICE,
        env={**os.environ, "NATS_URL": nats_server.url, "LOG_LEVEL": "warning"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        while b"STARTED" not in await asyncio.wait_for(proc.stdout.readline(), 30):
            pass
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
