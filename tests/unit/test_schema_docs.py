"""The exported JSON Schema documents every field, and a recorded call validates against it
with a standard validator (the ``jsonschema`` package)."""

import json
from typing import Any

import jsonschema
import msgspec
import pytest

from schemas.catalogue import FAMILIES, json_schema
from schemas.codec import encode
from schemas.schema_docs import describe, struct_types
from tests.support.recorded_call import recorded_call
from tests.support.samples import samples


def test_every_field_of_every_message_is_described() -> None:
    types = struct_types([m for f in FAMILIES for m in f.members])
    undocumented = [
        f"{name}.{field}"
        for name, struct in types.items()
        for field in struct.__struct_fields__
        if not describe(struct, field)
    ]
    assert not undocumented, f"document these fields (a #: comment): {undocumented}"
    defs = json_schema()["$defs"]
    for name, schema in defs.items():
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field}"


def _validator(family: str) -> jsonschema.protocols.Validator:
    document: dict[str, Any] = json.loads(json.dumps(json_schema()))
    schema = {"$defs": document["$defs"], **document["x-families"][family]["schema"]}
    cls = jsonschema.validators.validator_for({"$schema": document["$schema"]})
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_a_recorded_call_validates_against_the_exported_schema() -> None:
    rec = recorded_call("schema")
    for family, messages in (
        ("call_event", rec.events),
        ("transcript_segment", rec.segments),
        ("caption", rec.captions),
    ):
        validator = _validator(family)
        for message in messages:
            errors = list(validator.iter_errors(json.loads(encode(message))))
            assert not errors, f"{type(message).__name__}: {errors[0].message}"


def test_every_sample_validates_and_a_broken_event_does_not() -> None:
    by_type = {m: f.name for f in FAMILIES for m in f.members}
    validators: dict[str, jsonschema.protocols.Validator] = {}
    for message in samples():
        family = by_type.get(type(message))
        if family is None:
            continue
        validator = validators.setdefault(family, _validator(family))
        validator.validate(json.loads(encode(message)))
    event = json.loads(encode(recorded_call("bad").events[1]))
    event["active_count"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validators["call_event"].validate(event)
    unknown = {**event, "type": "participant.teleported"}
    with pytest.raises(jsonschema.ValidationError):
        validators["call_event"].validate(unknown)
    assert msgspec.json.decode(encode(recorded_call("x").events[0]))["seq"] == 1
