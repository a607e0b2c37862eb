"""The bus on a three-node JetStream cluster: replicated streams survive a node crash."""

import pytest

from schemas import subjects
from schemas.bus import Bus
from schemas.call_events import AnyCallEvent, CallEnded
from schemas.codec import decode
from schemas.kv import TypedKv
from schemas.provisioning import provision
from schemas.settings import BusSettings
from tests.support.nats_server import NatsCluster

pytestmark = pytest.mark.cluster


async def test_events_and_kv_survive_the_loss_of_one_node(nats_cluster: NatsCluster) -> None:
    settings = BusSettings(nats_url=nats_cluster.url, nats_stream_replicas=3)
    bus = await Bus.connect(settings, "fault-test")
    try:
        await provision(bus.js, settings)
        info = await bus.js.stream_info(subjects.CALL_EVENTS_STREAM)
        assert info.config.num_replicas == 3

        before = await bus.js_publish(
            subjects.call_event("c-fault", "ended"),
            CallEnded(call_id="c-fault", reason="completed"),
        )
        kv: TypedKv[CallEnded] = await bus.kv(subjects.CALLS_BUCKET, CallEnded)
        rev = await kv.create("c-fault", CallEnded(call_id="c-fault", reason="completed"))

        # Crash one node that is not the one we are connected to, then keep working.
        connected = bus.nc.connected_url.port if bus.nc.connected_url else None
        victim = next(n for n in nats_cluster.nodes if n.port != connected)
        victim.kill()

        after = await bus.js_publish(
            subjects.call_event("c-fault", "ended"), CallEnded(call_id="c-fault", reason="failed")
        )
        assert after > before
        rev2 = await kv.update("c-fault", CallEnded(call_id="c-fault", reason="failed"), rev)
        assert rev2 > rev
        last = await bus.js.get_last_msg(
            subjects.CALL_EVENTS_STREAM, subjects.call_event("c-fault", "ended")
        )
        assert last.data is not None
        latest: object = decode(last.data, AnyCallEvent)
        assert isinstance(latest, CallEnded) and latest.reason == "failed"
    finally:
        await bus.close()
