"""What the signaling benchmarks share: bench tokens, and timing ``call:signal`` relays.

A relay sample is the one-way time of an ICE candidate sent by one participant's socket
to the other's, through the gateways (A -> B and B -> A alternately, the two participants
on different gateways when the cluster has two), measured on one clock (both clients run
in this process).
"""

import asyncio
import time
from typing import Any

import jwt

from tests.support.call_client import CallClient
from tests.support.gateways import JWT_SECRET, GatewayCluster

#: A loopback host candidate: what a browser trickles most often.
CANDIDATE: dict[str, Any] = {
    "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}
#: Samples sent first and not counted (connections and caches warming up).
WARM_UP = 20


def token_for(user_id: str, ttl_s: int = 3 * 3600) -> str:
    """A member's token signed with the benchmark stack's key."""
    now = int(time.time())
    claims = {"sub": user_id, "iss": "meeshy", "aud": "meeshy-calls", "exp": now + ttl_s}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def relay_samples(cluster: GatewayCluster, tag: str, samples: int) -> list[float]:
    """``samples`` one-way ``call:signal`` times (ms), alternating A -> B and B -> A."""
    conv = f"bench-relay-{tag}"
    ua, ub = f"relay-{tag}-a", f"relay-{tag}-b"
    cluster.put_conversation(conv, "DIRECT", [ua, ub])
    gw_a, gw_b = cluster.urls[0], cluster.urls[-1]
    a = await CallClient.connect(gw_a, token_for(ua), media=False)
    b = await CallClient.connect(gw_b, token_for(ub), media=False)
    out: list[float] = []
    try:
        call_id = (await a.initiate(conv))["call"]["callId"]
        await b.wait_for("call:incoming")
        await b.accept(call_id)
        await a.wait_for("call:participant-joined")
        for i in range(samples + WARM_UP):
            src, dst = (a, b) if i % 2 == 0 else (b, a)
            before = len(dst.events)
            t0 = time.monotonic()
            await src.sio.emit(
                "call:signal",
                {
                    "callId": call_id,
                    "to": dst.participant_id,
                    "type": "ice-candidate",
                    "candidate": CANDIDATE,
                },
            )
            got = await dst.wait_for("call:signal", timeout=5)
            assert got["from"] == src.participant_id
            arrived = next(t for name, _, t in dst.events[before:] if name == "call:signal")
            if i >= WARM_UP:
                out.append((arrived - t0) * 1000)
        await a.leave()
    finally:
        await asyncio.gather(a.close(), b.close())
    return out
