"""The checked-in JSON Schemas under spec/schema are what the models generate."""

from __future__ import annotations

import json
from pathlib import Path

from bmsgate.spec import REGENERATE, SCHEMAS, render_schema, stale_schemas, write_schemas

ROOT = Path(__file__).resolve().parents[1]


def test_checked_in_schemas_are_current() -> None:
    stale = stale_schemas(ROOT)
    assert not stale, f"{', '.join(stale)} out of date with the models: run {REGENERATE}"


def test_schemas_are_json_schema_documents(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert [path.name for path in written] == list(SCHEMAS)
    for path in written:
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert schema["$schema"].startswith("https://json-schema.org/")
        assert schema["type"] == "object"
        if path.name != "snapshot.schema.json":  # data files refuse unknown keys; snapshot readers skip them
            assert schema["additionalProperties"] is False
    assert not stale_schemas(tmp_path)
    (tmp_path / "spec" / "schema" / "register-map.schema.json").write_text("{}", encoding="utf-8")
    assert stale_schemas(tmp_path) == ["spec/schema/register-map.schema.json"]


def test_protocol_schema_names_the_new_keys() -> None:
    schema = json.loads(render_schema("protocol-definition.schema.json"))
    assert {"requires", "version", "format"} <= set(schema["properties"])
