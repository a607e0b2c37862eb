import asyncio

from media_node.keyframes import KeyframeRequester, is_vp8_keyframe


def test_vp8_keyframe_bit() -> None:
    assert is_vp8_keyframe(b"\x10\x02\x00")  # bit 0 clear: keyframe
    assert not is_vp8_keyframe(b"\x11\x02\x00")  # bit 0 set: delta frame
    assert not is_vp8_keyframe(b"")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_requests_are_rate_limited_coalesced_and_never_lost() -> None:
    sent: list[int] = []
    got = asyncio.Event()

    def send(ssrc: int) -> None:
        sent.append(ssrc)
        got.set()

    clock = FakeClock()
    req = KeyframeRequester(send, min_interval_s=0.05, clock=clock)
    req.request("new_subscriber")  # no SSRC yet: kept pending
    await asyncio.sleep(0)
    assert sent == []
    req.set_primary_ssrc(1234)
    await asyncio.wait_for(got.wait(), 1)
    assert sent == [1234]

    # Within the interval: many requests become one deferred PLI.
    got.clear()
    clock.now += 0.01
    for _ in range(5):
        req.request("subscriber_pli")
    await asyncio.sleep(0)
    assert sent == [1234]
    await asyncio.wait_for(got.wait(), 1)  # fired by the timer at the interval's end
    assert sent == [1234, 1234]
    assert req.sent == 2 and req.requested == 6

    # After the interval a request goes out at once.
    got.clear()
    clock.now += 1.0
    req.request("upstream_loss")
    await asyncio.wait_for(got.wait(), 1)
    assert len(sent) == 3
    req.close()


async def test_a_failing_transport_does_not_raise() -> None:
    tried = asyncio.Event()

    def send(ssrc: int) -> None:
        tried.set()
        raise ConnectionError("closed")

    req = KeyframeRequester(send)
    req.set_primary_ssrc(1)
    req.request("x")
    await asyncio.wait_for(tried.wait(), 1)
    assert req.sent == 1
