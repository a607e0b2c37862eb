"""uvicorn embedded in the service's own event loop.

The service runtime owns SIGTERM (to drain the whole service, not only HTTP), so uvicorn's
own signal capture is turned off.
"""

import contextlib
from collections.abc import Generator

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the service runtime."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
