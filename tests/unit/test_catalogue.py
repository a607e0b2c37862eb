import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from schemas.call_commands import AnyCallCommand, MigrateToSfu
from schemas.call_events import AnyCallEvent, CallEnded, ParticipantJoined
from schemas.catalogue import FAMILIES, json_schema
from schemas.codec import decode, encode
from schemas.version import SCHEMA_VERSION
from tests.support.samples import samples


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_its_family_union(message: msgspec.Struct) -> None:
    family = next(f for f in FAMILIES if type(message) in f.members)
    data = encode(message)
    assert json.loads(data)["schema_version"] == SCHEMA_VERSION
    assert decode(data, family.union) == message


def test_every_catalogue_member_has_a_sample() -> None:
    covered = {type(m) for m in samples()}
    members = {m for f in FAMILIES for m in f.members}
    assert members == covered


def test_union_dispatches_on_the_type_tag() -> None:
    evt: object = decode(encode(CallEnded(call_id="c", reason="missed")), AnyCallEvent)
    assert isinstance(evt, CallEnded)
    cmd: object = decode(encode(MigrateToSfu(call_id="c", epoch=1, node_id="n")), AnyCallCommand)
    assert isinstance(cmd, MigrateToSfu)


def test_unknown_tag_and_bad_fields_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"type":"call.exploded","call_id":"c"}', AnyCallEvent)
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"type":"call.ended","call_id":"","reason":"completed"}', AnyCallEvent)
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"type":"call.ended","call_id":"c","reason":"bored"}', AnyCallEvent)
    with pytest.raises(msgspec.DecodeError):
        decode(b"\xff\xfe not json", AnyCallEvent)


def test_newer_producers_may_add_fields() -> None:
    raw = json.loads(encode(CallEnded(call_id="c", reason="completed")))
    raw["added_in_v2"] = {"anything": 1}
    assert isinstance(decode(json.dumps(raw).encode(), AnyCallEvent), CallEnded)


def test_messages_are_frozen() -> None:
    evt = CallEnded(call_id="c", reason="completed")
    with pytest.raises(AttributeError):
        evt.reason = "missed"  # type: ignore[misc]


def test_json_schema_covers_every_tag() -> None:
    doc = json_schema()
    tags = {tag for fam in doc["x-families"].values() for tag in fam["types"]}
    assert "participant.joined" in tags and "call.migrate_to_sfu" in tags
    assert set(doc["$defs"]) >= {"ParticipantJoined", "Participant", "ServiceHeartbeat"}
    joined = doc["$defs"]["ParticipantJoined"]
    assert "participant" in joined["required"]
    assert ParticipantJoined.__doc__ and joined["description"].startswith("A person")


def test_export_command_writes_the_schema(tmp_path: Path) -> None:
    out = tmp_path / "catalogue.schema.json"
    subprocess.run([sys.executable, "-m", "schemas", "export", str(out)], check=True)
    assert json.loads(out.read_text())["x-families"]["call_event"]["subject"].startswith("call.evt")
