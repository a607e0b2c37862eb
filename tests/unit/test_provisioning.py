"""Provisioning waits for a forming cluster and fails at once on anything else."""

import asyncio

import nats.errors
import nats.js.errors
import pytest

from schemas.provisioning import _while_forming


def no_peers() -> Exception:
    return nats.js.errors.BadRequestError(
        code=400, err_code=10005, description="no suitable peers for placement, peer offline"
    )


async def test_a_stream_is_created_once_the_cluster_has_its_peers() -> None:
    attempts = 0

    async def create() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise no_peers()
        return "created"

    deadline = asyncio.get_running_loop().time() + 10
    assert await _while_forming(create, "stream:X", deadline) == "created"
    assert attempts == 3


async def test_another_bad_request_is_not_retried() -> None:
    attempts = 0

    async def create() -> str:
        nonlocal attempts
        attempts += 1
        raise nats.js.errors.BadRequestError(code=400, err_code=10052, description="bad config")

    deadline = asyncio.get_running_loop().time() + 10
    with pytest.raises(nats.js.errors.BadRequestError):
        await _while_forming(create, "stream:X", deadline)
    assert attempts == 1


async def test_a_cluster_that_never_forms_fails_at_the_deadline() -> None:
    attempts = 0

    async def create() -> str:
        nonlocal attempts
        attempts += 1
        raise no_peers()

    deadline = asyncio.get_running_loop().time() + 0.3
    with pytest.raises(nats.js.errors.BadRequestError):
        await _while_forming(create, "stream:X", deadline)
    assert attempts > 1


async def test_a_lookup_no_leader_answers_is_asked_again() -> None:
    """On a cluster still electing its leaders an API request gets no answer at all."""
    attempts = 0

    async def lookup() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise nats.errors.TimeoutError
        return "unchanged"

    deadline = asyncio.get_running_loop().time() + 10
    assert await _while_forming(lookup, "stream:X", deadline) == "unchanged"
    assert attempts == 3
