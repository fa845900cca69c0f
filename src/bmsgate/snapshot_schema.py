"""The JSON Schema of the snapshot JSON form, generated from the model (never edited by hand).

``spec/schema/snapshot.schema.json`` is this module's output, written by ``scripts/generate-spec`` (one
row of `bmsgate.spec.SCHEMAS`); a test keeps the two equal.
"""

from __future__ import annotations

import json
from typing import Any, Final

from bmsgate.model import (
    DERIVED_JSON_KEYS,
    DEVICE_FIELD_KINDS,
    SNAPSHOT_FIELD_KINDS,
    SNAPSHOT_SCHEMA_VERSION,
    Alarm,
    FieldKind,
)

__all__ = ["snapshot_json_schema", "snapshot_json_schema_text"]


_SCALAR: Final[dict[FieldKind, Any]] = {
    FieldKind.TEXT: {"type": "string"},
    FieldKind.NUMBER: {"type": "number"},
    FieldKind.COUNT: {"type": "integer", "minimum": 0},
    FieldKind.FLOAT: {"type": ["number", "null"]},
    FieldKind.INT: {"type": ["integer", "null"]},
    FieldKind.BOOL: {"type": ["boolean", "null"]},
    FieldKind.OPTIONAL_TEXT: {"type": ["string", "null"]},
    FieldKind.DATE: {"type": ["string", "null"], "format": "date"},
    FieldKind.FLOAT_LIST: {"type": "array", "items": {"type": "number"}},
    FieldKind.CELL_NUMBERS: {
        "type": ["array", "null"],
        "items": {"type": "integer", "minimum": 1},
        "uniqueItems": True,
    },
    FieldKind.DEVICE: {"$ref": "#/$defs/device"},
    FieldKind.EXTRAS: {"type": "object", "additionalProperties": {"type": ["number", "string", "boolean"]}},
}


def _property(kind: FieldKind) -> dict[str, Any]:
    if kind is FieldKind.ALARMS:
        return {"type": "array", "items": {"enum": sorted(alarm.value for alarm in Alarm)}, "uniqueItems": True}
    return dict(_SCALAR[kind])


def snapshot_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every `BatterySnapshot.to_dict` result satisfies.

    Every key is required: absent values are ``null`` (or an empty list/object), never a missing key.
    Further keys are allowed because a schema version only ever gains keys.
    """
    properties: dict[str, Any] = {"schema": {"const": SNAPSHOT_SCHEMA_VERSION}}
    properties.update({name: _property(kind) for name, kind in SNAPSHOT_FIELD_KINDS.items()})
    properties.update({name: _property(kind) for name, kind in DERIVED_JSON_KEYS.items()})
    device = {name: _property(kind) for name, kind in DEVICE_FIELD_KINDS.items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "bmsgate battery snapshot",
        "description": "One consistent reading of one battery, in SI units (docs/snapshot-json.md). "
        "Generated from bmsgate.model by scripts/generate-spec.",
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "$defs": {
            "device": {
                "type": "object",
                "required": list(device),
                "properties": device,
            }
        },
    }


def snapshot_json_schema_text() -> str:
    """The schema as the checked-in file holds it (two-space indent, trailing newline)."""
    return json.dumps(snapshot_json_schema(), indent=2, ensure_ascii=False) + "\n"
