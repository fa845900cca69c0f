"""The checked-in snapshot JSON Schema is the one generated from the model, and `to_dict` satisfies it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from hypothesis import given

from bmsgate.model import BatterySnapshot
from bmsgate.snapshot_schema import snapshot_json_schema
from tests.strategies import snapshots

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "spec" / "schema" / "snapshot.schema.json"
_TYPES: dict[str, Any] = {
    "string": str,
    "number": (int, float),
    "integer": int,
    "boolean": bool,
    "null": type(None),
    "array": list,
    "object": dict,
}


def _errors(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    """A tiny checker for the keywords the generated schema uses (jsonschema is not a dependency)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    if "const" in schema and value != schema["const"]:
        return [f"{path}: {value!r} is not {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of the enum"]
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        bools_ok = "boolean" in names
        if not any(isinstance(value, _TYPES[name]) for name in names) or (isinstance(value, bool) and not bools_ok):
            return [f"{path}: {value!r} is not {names}"]
    errors: list[str] = []
    if isinstance(value, dict):
        errors += [f"{path}: {key!r} is missing" for key in schema.get("required", ()) if key not in value]
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties", {}))
            errors += _errors(item, sub, root, f"{path}.{key}")
    if isinstance(value, list):
        if schema.get("uniqueItems") and len(set(map(json.dumps, value))) != len(value):
            errors.append(f"{path}: items are not unique")
        for index, item in enumerate(value):
            errors += _errors(item, schema.get("items", {}), root, f"{path}[{index}]")
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        errors.append(f"{path}: {value!r} is below {schema['minimum']}")
    if schema.get("format") == "date" and isinstance(value, str):
        dt.date.fromisoformat(value)
    return errors


def test_schema_names_exactly_the_keys_of_the_json_form() -> None:
    schema = snapshot_json_schema()
    data = BatterySnapshot(battery_id="x", timestamp=0.0).to_dict()
    assert list(schema["properties"]) == list(data)
    assert set(schema["$defs"]["device"]["properties"]) == set(data["device"])


@given(snapshots)
def test_json_form_validates_against_the_schema(snapshot: BatterySnapshot) -> None:
    schema = snapshot_json_schema()
    assert _errors(json.loads(json.dumps(snapshot.to_dict())), schema, schema) == []


def test_the_checker_catches_a_wrong_type() -> None:
    schema = snapshot_json_schema()
    data = BatterySnapshot(battery_id="x", timestamp=0.0).to_dict()
    assert _errors({**data, "voltage": "1"}, schema, schema)
    assert _errors({**data, "charge_enabled": 1}, schema, schema)
    assert _errors({**data, "alarms": ["nope"]}, schema, schema)
    del data["cycles"]
    assert _errors(data, schema, schema)
