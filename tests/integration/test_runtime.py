"""The shared service runtime, in process: draining waits for work in hand."""

import asyncio

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
