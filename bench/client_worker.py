"""One call participant in its own process, driven over stdin/stdout (JSON lines).

Benchmarks with several participants run each in a worker like this one, so the
participants' media work (aiortc encoding, DTLS, SRTP) does not queue behind one another
in a single Python event loop, as browsers on separate machines would not. Times are
``time.monotonic()``, comparable across processes on one machine.

Commands (one JSON object per line; each gets one JSON reply line):
``{"cmd": "connect", "url", "token", "name", "colour", "options"}``,
``{"cmd": "initiate", "conversation"}`` -> ``{"callId"}``, ``{"cmd": "accept"|"join",
"callId"}``, ``{"cmd": "leave"}``, ``{"cmd": "forget", "participantId"}``,
``{"cmd": "state", "since"}`` -> ``{"mode", "sfuLive", "links", "others", "participantId",
"arrivals": [[t, who, kind, path], ...], "events": [[name, t], ...]}``,
``{"cmd": "wait_mode", "mode", "timeout"}``, ``{"cmd": "wait_event", "event", "timeout"}``,
``{"cmd": "close"}``.
"""

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.call_client import CallClient


async def handle(client: CallClient | None, cmd: dict[str, Any]) -> tuple[CallClient | None, Any]:
    name = cmd["cmd"]
    if name == "connect":
        client = await CallClient.connect(
            cmd["url"],
            cmd["token"],
            name=cmd.get("name", ""),
            colour=tuple(cmd.get("colour", (40, 160, 40))),
            **cmd.get("options", {}),
        )
        return client, {}
    assert client is not None, "connect first"
    if name == "initiate":
        ack = await client.initiate(cmd["conversation"])
        return client, {"callId": ack["call"]["callId"]}
    if name == "accept":
        await client.accept(cmd["callId"])
    elif name == "join":
        await client.join(cmd["callId"])
    elif name == "leave":
        await client.leave()
    elif name == "forget":
        client.others.discard(cmd["participantId"])
    elif name == "wait_mode":
        await client.wait_mode(cmd["mode"], timeout=cmd.get("timeout", 30))
    elif name == "wait_event":
        await client.wait_for(cmd["event"], timeout=cmd.get("timeout", 30))
    elif name == "state":
        since = cmd.get("since", 0.0)
        return client, {
            "mode": client.mode,
            "sfuLive": client.sfu_live,
            "sfuReady": client.sfu is not None and client.sfu.downlink is not None,
            "links": sorted(client.links),
            "others": sorted(client.others),
            "participantId": client.participant_id,
            "arrivals": [list(a) for a in client.arrivals if a[0] >= since],
            "events": [[n, t] for n, _, t in client.events if t >= since],
        }
    elif name == "close":
        await client.close()
        return None, {}
    else:
        raise ValueError(f"unknown command {name}")
    return client, {}


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    client: CallClient | None = None
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            client, result = await handle(client, cmd)
            reply = {"ok": True, "result": result, "at": time.monotonic()}
        except Exception as exc:  # the benchmark reports it; the worker keeps going
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if cmd["cmd"] == "close":
            return
    if client is not None:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
