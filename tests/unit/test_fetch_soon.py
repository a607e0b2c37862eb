"""``fetch_soon`` keeps the message in hand whatever the second, short fetch raises."""

from typing import Any

import nats.errors
import pytest

from schemas.bus import fetch_soon


class _Pull:
    """A pull subscription whose second fetch times out the way nats-py does."""

    def __init__(self, late: BaseException) -> None:
        self.late = late
        self.calls: list[tuple[int, float]] = []

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        self.calls.append((batch, timeout))
        if len(self.calls) == 1:
            return ["first"]
        raise self.late


@pytest.mark.parametrize(
    "late",
    [TimeoutError(), nats.errors.TimeoutError()],
    ids=["asyncio-timeout", "nats-timeout"],
)
async def test_the_first_message_survives_a_late_answer(late: BaseException) -> None:
    pull = _Pull(late)
    got: list[Any] = await fetch_soon(pull, 64, wait_s=1.0)
    assert got == ["first"]
    assert pull.calls == [(1, 1.0), (63, 0.001)]


async def test_nothing_pending_raises_the_timeout() -> None:
    class _Empty:
        async def fetch(self, batch: int, timeout: float) -> list[Any]:
            raise nats.errors.TimeoutError

    with pytest.raises(nats.errors.TimeoutError):
        await fetch_soon(_Empty(), 64, wait_s=0.01)
