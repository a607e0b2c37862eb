"""Run our services as real child processes and watch their heartbeats."""

import asyncio
import os
import sys
from collections.abc import Mapping

from schemas import subjects
from schemas.bus import Bus, Incoming
from schemas.heartbeat import ServiceHeartbeat


class HeartbeatWatch:
    """Records every heartbeat of one instance; ``wait_state`` waits for a state."""

    def __init__(self) -> None:
        self.beats: list[ServiceHeartbeat] = []
        self._changed = asyncio.Event()

    async def __call__(self, beat: ServiceHeartbeat, _: Incoming) -> None:
        self.beats.append(beat)
        self._changed.set()

    @property
    def states(self) -> list[str]:
        return [b.state for b in self.beats]

    async def wait_state(self, state: str, timeout: float = 20.0) -> ServiceHeartbeat:
        async def until() -> ServiceHeartbeat:
            while True:
                for beat in self.beats:
                    if beat.state == state:
                        return beat
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(until(), timeout)

    @classmethod
    async def start(cls, bus: Bus, kind: str, service_id: str) -> "HeartbeatWatch":
        watch = cls()
        await bus.subscribe(subjects.service_heartbeat(kind, service_id), ServiceHeartbeat, watch)
        await bus.nc.flush()
        return watch


async def spawn_service(module: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
