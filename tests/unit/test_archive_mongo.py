"""The archive's MongoDB client never waits unbounded, and a timeout keeps the message."""

import base64
from typing import Any

import msgspec
import pytest
from pymongo.errors import ExecutionTimeout

from gateway.archive.repository import ArchiveRepository, Cursor, InvalidCursor
from gateway.archive.settings import ArchiveSettings
from gateway.archive.writer import ArchiveWriter
from gateway.settings import GatewaySettings


def test_every_mongo_wait_is_bounded_by_the_setting() -> None:
    settings = ArchiveSettings.from_env({"MONGO_TIMEOUT_S": "3"})
    assert GatewaySettings.from_env({"MONGO_TIMEOUT_S": "2.5"}).mongo_timeout_s == 2.5
    repo = ArchiveRepository.connect(
        "mongodb://127.0.0.1:1", "db", timeout_s=settings.mongo_timeout_s
    )
    try:
        options = repo.client.options
        assert options.timeout == 3.0  # timeoutMS: each operation as a whole
        assert options.pool_options.socket_timeout == 3.0
        assert options.pool_options.connect_timeout == 3.0
        assert options.server_selection_timeout == 3.0
    finally:
        repo.close()


class _Msg:
    def __init__(self) -> None:
        self.progress = 0

    async def in_progress(self) -> None:
        self.progress += 1


async def test_a_timed_out_write_is_retried_with_the_message_kept_in_hand() -> None:
    attempts: list[int] = []

    async def stalls_once() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ExecutionTimeout("operation exceeded time limit", 50)
        return "written"

    writer = ArchiveWriter(repo=None, accepting=lambda: True)  # type: ignore[arg-type]
    msg: Any = _Msg()
    assert await writer._retrying(stalls_once, [msg]) == "written"
    assert len(attempts) == 2 and msg.progress == 1


def crafted(fields: object) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(fields)).decode().rstrip("=")


@pytest.mark.parametrize(
    "fields", [[2**63, "c1"], [2**70, "c1"], [-1, "c1"], [1, "k" * 300], [1.5, "c1"]]
)
def test_a_crafted_cursor_is_refused_with_its_reason(fields: object) -> None:
    with pytest.raises(InvalidCursor, match="not one this API returned"):
        Cursor.decode(crafted(fields))


def test_a_cursor_round_trips_up_to_the_largest_bson_int() -> None:
    last = Cursor(2**63 - 1, "call-z")
    assert Cursor.decode(last.encode()) == last
