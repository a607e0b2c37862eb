"""Start components in order, wait for each to be ready, watch them, stop them cleanly.

Nothing is restarted silently: if a component dies, the supervisor says which one, where its
log is, stops the rest and exits non-zero. Ctrl-C (or SIGTERM) stops everything in reverse
order, each service draining first.
"""

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from devstack.components import Component, NatsComponent, NotReady, StackPaths
from schemas.bus import Bus
from schemas.permissions import SUPERVISOR
from schemas.settings import BusSettings


@dataclass
class Running:
    component: Component
    process: asyncio.subprocess.Process
    log_path: Path


class Supervisor:
    """Runs a list of components as child processes in their own sessions."""

    def __init__(self, components: list[Component], paths: StackPaths, out: IO[str]) -> None:
        self.components = components
        self.paths = paths
        self.out = out
        self.running: list[Running] = []
        self.bus: Bus | None = None

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def _spawn(self, component: Component) -> Running:
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.paths.logs / f"{component.name}.log"
        log_file = log_path.open("wb")
        env = {**os.environ, **component.env}
        # A session of its own: the terminal's Ctrl-C reaches only the supervisor, which
        # then stops children in order (services drain before NATS goes away).
        process = await asyncio.create_subprocess_exec(
            *component.argv(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log_file.close()
        return Running(component, process, log_path)

    async def start_all(self) -> None:
        for component in self.components:
            started = time.monotonic()
            running = await self._spawn(component)
            self.running.append(running)
            ready = asyncio.create_task(component.wait_ready(running.log_path, self.bus))
            died = asyncio.create_task(running.process.wait())
            done, _ = await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
            if died in done:
                ready.cancel()
                raise NotReady(
                    f"{component.name} exited with code {running.process.returncode} "
                    f"while starting; see {running.log_path}"
                )
            died.cancel()
            ready.result()
            self.say(
                f"  ok  {component.name:<18} ready in {time.monotonic() - started:5.2f}s  "
                f"{component.describe():<28} log: {running.log_path}"
            )
            if isinstance(component, NatsComponent):
                creds = component.credentials(SUPERVISOR.name)
                self.bus = await Bus.connect(
                    BusSettings(
                        nats_url=creds["NATS_URL"],
                        nats_user=creds["NATS_USER"],
                        nats_password=creds["NATS_PASSWORD"],
                        nats_connect_deadline_s=10,
                    ),
                    "devstack-supervisor",
                )

    async def watch(self, stop: asyncio.Event) -> int:
        """Wait for Ctrl-C (returns 0) or for a component to die (returns 1)."""
        waits = {asyncio.create_task(r.process.wait()): r for r in self.running}
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopper, *waits}, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        if stopper in done:
            return 0
        stopper.cancel()
        for task in done:
            dead = waits[task]
            self.say(
                f"  !!  {dead.component.name} exited with code {dead.process.returncode}; "
                f"see {dead.log_path}. Stopping everything (nothing is restarted silently)."
            )
        return 1

    async def stop_all(self, timeout_s: float = 30.0) -> None:
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()
        for running in reversed(self.running):
            process = running.process
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), timeout_s)
                except TimeoutError:
                    self.say(
                        f"  !!  {running.component.name} did not stop in {timeout_s:g}s; killing"
                    )
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            self.say(f"  --  {running.component.name:<18} stopped (exit {process.returncode})")
