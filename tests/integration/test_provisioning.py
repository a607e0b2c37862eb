from schemas import subjects
from schemas.bus import Bus
from schemas.provisioning import provision
from schemas.settings import BusSettings


async def test_provisioning_twice_changes_nothing(bus: Bus, bus_settings: BusSettings) -> None:
    # The fixture provisioned once already.
    before = await bus.js.stream_info(subjects.CALL_EVENTS_STREAM)
    kv_before = await bus.js.key_value(subjects.CALLS_BUCKET)
    status_before = await kv_before.status()

    report = await provision(bus.js, bus_settings)

    assert set(report.actions.values()) == {"unchanged"}
    after = await bus.js.stream_info(subjects.CALL_EVENTS_STREAM)
    assert after.config == before.config
    assert after.created == before.created
    assert after.state.messages >= before.state.messages  # nothing purged
    status_after = await (await bus.js.key_value(subjects.CALLS_BUCKET)).status()
    assert status_after.values >= status_before.values


async def test_changed_limits_are_updated_in_place(bus: Bus, bus_settings: BusSettings) -> None:
    bigger = BusSettings(
        nats_url=bus_settings.nats_url,
        dead_letters_max_age_s=bus_settings.dead_letters_max_age_s * 2,
    )
    report = await provision(bus.js, bigger)
    assert report.actions[f"stream:{subjects.DEAD_LETTER_STREAM}"] == "updated"
    info = await bus.js.stream_info(subjects.DEAD_LETTER_STREAM)
    assert info.config.max_age == bigger.dead_letters_max_age_s
    await provision(bus.js, bus_settings)  # put it back for the other tests
