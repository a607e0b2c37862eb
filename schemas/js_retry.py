"""Retrying JetStream writes through leader elections.

While a replicated stream elects a new leader (a node crashed, the cluster just started),
writes fail for a moment with "no responders" or time out. "No responders" means nothing
was stored, so retrying is always safe. A timeout may hide a stored write, so it is
retried only when the write is idempotent (a ``Nats-Msg-Id`` de-duplicates it, or a
compare-and-set would refuse to apply it twice).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

from schemas.logs import get_logger

T = TypeVar("T")

log = get_logger("schemas.js_retry")

#: How long a write keeps retrying before the error reaches the caller.
DEFAULT_BUDGET_S = 15.0


async def retry_transient(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    idempotent: bool,
    budget_s: float = DEFAULT_BUDGET_S,
) -> T:
    """Run ``op``, retrying transient JetStream unavailability within ``budget_s``."""
    deadline = time.monotonic() + budget_s
    delay = 0.05
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError) as exc:
            error: Exception = exc
        except nats.errors.TimeoutError as exc:
            if not idempotent:
                raise
            error = exc
        except nats.js.errors.ServiceUnavailableError as exc:
            error = exc
        if time.monotonic() + delay > deadline:
            raise error
        if attempt == 1:
            log.warning("jetstream.retrying", what=what, error=type(error).__name__)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
