"""Socket deliveries over NATS: one subscription per person, however their sockets race."""

import asyncio
from typing import Any

from gateway.delivery import Delivery, SocketSession
from schemas.bus import Bus
from tests.support.waiting import until


async def test_concurrent_sockets_of_one_person_share_one_subscription(bus: Bus, uid: str) -> None:
    got: list[tuple[str, str]] = []
    changed = asyncio.Event()

    async def emit(event: str, payload: dict[str, Any], sid: str) -> None:
        got.append((event, sid))
        changed.set()

    delivery = Delivery(bus, emit)
    person = f"u-{uid}"
    sids = [f"s{i}-{uid}" for i in range(5)]
    await asyncio.gather(*(delivery.attach(SocketSession(sid, person)) for sid in sids))
    assert delivery.subscription_count == 1
    await delivery.send(person, "call:ping", {})
    # A second delivery behind the first: NATS keeps one subscription's order, so once every
    # socket has the marker, any duplicate of the ping would already be here.
    await delivery.send(person, "call:marker", {})
    await until(lambda: sum(e == "call:marker" for e, _ in got) >= len(sids), changed, 5)
    pings = sorted(sid for event, sid in got if event == "call:ping")
    assert pings == sorted(sids)  # each socket exactly once

    for sid in sids:
        await delivery.detach(sid)
    assert delivery.subscription_count == 0 and delivery.socket_count == 0


async def test_a_socket_gone_while_subscribing_leaves_no_subscription(bus: Bus, uid: str) -> None:
    async def emit(event: str, payload: dict[str, Any], sid: str) -> None:
        raise AssertionError("nobody is connected")

    delivery = Delivery(bus, emit)
    subscriptions_before = len(bus.nc._subs)
    attaching = asyncio.create_task(delivery.attach(SocketSession(f"s-{uid}", f"u-{uid}")))
    await asyncio.sleep(0)  # the attach is now waiting on NATS
    await delivery.detach(f"s-{uid}")
    await attaching
    assert delivery.subscription_count == 0 and delivery.socket_count == 0
    assert len(bus.nc._subs) == subscriptions_before  # the late subscription was dropped
