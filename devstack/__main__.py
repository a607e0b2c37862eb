"""``python -m devstack``: the whole system on this machine (what ``make run`` starts).

Environment: ``STACK_NATS_PORT`` (4222), ``STACK_MONGO_PORT`` (27017), ``GATEWAY_PORT``
(8000), ``STACK_METRICS_PORT`` (9100: services on 9101...; 0: free ports), ``STACK_DIR``
(.run).
"""

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

from devstack.components import (
    ApertiumComponent,
    MongoComponent,
    NatsComponent,
    NotReady,
    ServiceComponent,
    StackPaths,
    default_components,
)
from devstack.supervisor import Supervisor
from schemas.errors import BusUnavailable
from schemas.logs import configure_logging


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def run() -> int:
    configure_logging("devstack", "supervisor", "error")
    paths = StackPaths(Path(os.environ.get("STACK_DIR", ".run")).resolve())
    components = default_components(paths)
    for component in components:
        port = None
        ports: list[int] = []
        if isinstance(component, NatsComponent | MongoComponent | ApertiumComponent):
            ports.append(component.port)
        elif isinstance(component, ServiceComponent):
            if "GATEWAY_PORT" in component.env:
                ports.append(int(component.env["GATEWAY_PORT"]))
            ports.append(int(component.env.get("METRICS_PORT", "0")))
        for port in ports:
            if port and not _port_free("127.0.0.1", port):
                print(
                    f"port {port} ({component.name}) is already in use; set STACK_NATS_PORT"
                    " / STACK_MONGO_PORT / STACK_APY_PORT / GATEWAY_PORT / STACK_METRICS_PORT"
                    " to free ports",
                    file=sys.stderr,
                )
                return 2

    print(f"Starting the embedded stack (data and logs in {paths.root})", flush=True)
    supervisor = Supervisor(components, paths, sys.stdout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        await supervisor.start_all()
        gateway = next(
            c for c in components if isinstance(c, ServiceComponent) and c.name == "gateway"
        )
        url = gateway.url
        print(
            f"\nAll components ready. Gateway {url} (OpenAPI: {url}/openapi.json; "
            "a two-person call: .venv/bin/python tools/demo_call.py). Ctrl-C stops everything.\n",
            flush=True,
        )
        code = await supervisor.watch(stop)
    except (NotReady, BusUnavailable) as exc:
        print(f"  !!  {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        print("Stopping...", flush=True)
        await supervisor.stop_all()
    return code


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
