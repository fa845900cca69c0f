"""The language-neutral contracts under ``spec/``: JSON Schemas generated from the models.

:data:`SCHEMAS` is the one table of what is generated; a new contract (the snapshot JSON, a fleet message)
is one more row. ``scripts/generate-spec`` writes them; a test fails while a checked-in file is stale.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

__all__ = ["REGENERATE", "SCHEMAS", "SCHEMA_DIR", "render_schema", "stale_schemas", "write_schemas"]

SCHEMA_DIR: Final = Path("spec") / "schema"
"""Where the schemas live, relative to the repository root."""
REGENERATE: Final = "scripts/generate-spec"
"""The command that rewrites every generated file."""


def _protocol_definition() -> type[BaseModel]:
    from bmsgate.protocols.definition import ProtocolDefinition  # noqa: PLC0415 - import what a row needs only

    return ProtocolDefinition


def _register_map() -> type[BaseModel]:
    from bmsgate.inverter.modbus.registermap import RegisterMapDefinition  # noqa: PLC0415

    return RegisterMapDefinition


def _can_profile() -> type[BaseModel]:
    from bmsgate.inverter.can.definition import CanProfileDefinition  # noqa: PLC0415

    return CanProfileDefinition


def _fleet(name: str) -> Callable[[], type[BaseModel]]:
    def model() -> type[BaseModel]:
        from bmsgate.fleet import protocol, updates  # noqa: PLC0415

        found: type[BaseModel] = getattr(protocol, name, None) or getattr(updates, name)
        return found

    return model


def _snapshot() -> str:
    from bmsgate.snapshot_schema import snapshot_json_schema_text  # noqa: PLC0415

    return snapshot_json_schema_text()


SCHEMAS: Final[Mapping[str, tuple[str, Callable[[], type[BaseModel]]] | Callable[[], str]]] = {
    "protocol-definition.schema.json": ("bmsgate protocol definition (canonical IR and YAML)", _protocol_definition),
    "register-map.schema.json": ("bmsgate Modbus register map (canonical IR and YAML)", _register_map),
    "can-profile.schema.json": ("bmsgate CAN profile with its DBC text (canonical IR)", _can_profile),
    # The snapshot is a dataclass, not a pydantic model: its schema is written from the model's field kinds.
    "snapshot.schema.json": _snapshot,
    "fleet-state.schema.json": ("bmsgate fleet: gateway state (retained)", _fleet("StateMessage")),
    "fleet-telemetry.schema.json": ("bmsgate fleet: telemetry, one per interval", _fleet("TelemetryMessage")),
    "fleet-event.schema.json": ("bmsgate fleet: gateway event", _fleet("EventMessage")),
    "fleet-command.schema.json": ("bmsgate fleet: command from the server", _fleet("CommandMessage")),
    "fleet-desired.schema.json": ("bmsgate fleet: signed desired state (retained)", _fleet("DesiredEnvelope")),
    "fleet-reported.schema.json": ("bmsgate fleet: update phase (retained)", _fleet("ReportedState")),
}
"""File name -> (title, the pydantic model it is generated from), or a function giving the file's text."""


def render_schema(file_name: str) -> str:
    """The text a schema file must have (stable: sorted keys, two-space indent, final newline)."""
    row = SCHEMAS[file_name]
    if callable(row):
        return row()
    title, model = row
    schema: dict[str, Any] = model().model_json_schema(mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": file_name, **schema, "title": title}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(root: str | Path = ".") -> list[Path]:
    """Write every schema of :data:`SCHEMAS` under ``root/spec/schema``; returns the files written."""
    folder = Path(root) / SCHEMA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name in SCHEMAS:
        path = folder / file_name
        path.write_text(render_schema(file_name), encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(root: str | Path = ".") -> list[str]:
    """Schema files under `root` that are missing or differ from what the models generate."""
    folder = Path(root) / SCHEMA_DIR
    stale = []
    for file_name in SCHEMAS:
        path = folder / file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != render_schema(file_name):
            stale.append(str(SCHEMA_DIR / file_name))
    return stale
