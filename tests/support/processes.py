"""Run our services as real child processes and watch their heartbeats."""

import asyncio
import os
import sys
from collections.abc import Mapping

from schemas import subjects
from schemas.bus import Bus
from schemas.heartbeat import ServiceHeartbeat
from tests.support.nats_server import with_role
from tests.support.waiting import Collector


class HeartbeatWatch(Collector[ServiceHeartbeat]):
    """Records every heartbeat of one instance; ``wait_state`` waits for a state."""

    @property
    def beats(self) -> list[ServiceHeartbeat]:
        return self.items

    @property
    def states(self) -> list[str]:
        return [b.state for b in self.items]

    async def wait_state(self, state: str, timeout: float = 20.0) -> ServiceHeartbeat:
        await self.wait(lambda beats: any(b.state == state for b in beats), timeout)
        return next(b for b in self.items if b.state == state)

    @classmethod
    async def start(cls, bus: Bus, kind: str, service_id: str) -> "HeartbeatWatch":
        watch = cls()
        await bus.subscribe(subjects.service_heartbeat(kind, service_id), ServiceHeartbeat, watch)
        await bus.flush()
        return watch


async def spawn_service(module: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env={**os.environ, **with_role(module, env)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
