"""Canonical IR: lossless round trips for every built-in of every kind, stable bytes, integers stay integers."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsgate.canonical import canonical_bytes, compact_number, identity
from bmsgate.catalog import Catalog, CatalogItem, Kind
from bmsgate.inverter.can.definition import profile_definition
from bmsgate.inverter.modbus.registermap import register_map_definition
from bmsgate.protocols.definition import definition_from_canonical, definition_from_mapping

CATALOG = Catalog(system_dir="/nonexistent")
ITEMS = CATALOG.items()


def _reload(item: CatalogItem, data: Any) -> Any:
    if item.kind is Kind.PROTOCOL:
        return definition_from_mapping(data)
    if item.kind is Kind.REGISTER_MAP:
        return register_map_definition(data)
    return profile_definition(data, source="<ir>")


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: f"{item.kind.value}:{item.name}")
def test_builtin_round_trips_losslessly(item: CatalogItem) -> None:
    canonical = item.canonical_json()
    again = _reload(item, json.loads(canonical))
    assert again.model_dump() == item.definition.model_dump()  # all but where it was read from
    assert again.canonical_json() == canonical
    assert identity(canonical) == item.sha256
    # Compact and sorted: the bytes are exactly json.dumps' canonical settings.
    assert canonical == canonical_bytes(json.loads(canonical))
    assert b"\n" not in canonical


def test_protocol_ir_carries_format_and_exact_requires() -> None:
    ir = json.loads(CATALOG.get(Kind.PROTOCOL, "jbd").canonical_json())
    assert ir["format"] == 1
    assert "checksum.sum16_complement" in ir["requires"]
    assert ir["requires"] == sorted(ir["requires"])
    assert definition_from_canonical(json.dumps(ir)).sha256 == CATALOG.get(Kind.PROTOCOL, "jbd").sha256


def test_bytes_are_hex_and_integers_stay_integers() -> None:
    ir = json.loads(CATALOG.get(Kind.PROTOCOL, "jbd").canonical_json())
    assert ir["framing"]["start"] == "dd"
    scales = [field.get("scale") for reply in ir["replies"].values() for field in reply.get("fields", [])]
    assert all(not (isinstance(s, float) and s.is_integer()) for s in scales if s is not None)
    generic = json.loads(CATALOG.get(Kind.REGISTER_MAP, "generic").canonical_json())
    soc = next(entry for entry in generic["registers"] if entry["name"] == "soc")
    assert soc["max"] == 100
    assert isinstance(soc["max"], int)


def _minimal(scale: float | int, add: float | int) -> dict[str, Any]:
    return {
        "name": "mini",
        "title": "Mini",
        "framing": {"start": "AA", "length": {"offset": 1}},
        "requests": [{"name": "poll", "frame": "AA 01"}],
        "replies": {0: {"name": "main", "fields": [{"target": "voltage", "at": 0, "scale": scale, "add": add}]}},
    }


_numbers = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
)


# A scale too small to be any sensor's resolution is refused by the loader (tests/protocols/test_codegen.py).
_scales = _numbers.filter(lambda n: abs(n) >= 1e-12)


@given(scale=_scales, add=_numbers)
def test_canonical_form_is_stable(scale: float, add: float) -> None:
    first = definition_from_mapping(_minimal(scale, add)).canonical_json()
    second = definition_from_mapping(json.loads(first)).canonical_json()
    assert first == second
    field = json.loads(first)["replies"]["0"]["fields"][0]
    for key, value in (("scale", scale), ("add", add)):
        written = field.get(key, 1 if key == "scale" else 0)
        assert written == value
        assert not isinstance(written, float) or not written.is_integer()


def test_int_and_integral_float_spellings_are_one_identity() -> None:
    as_int = definition_from_mapping(_minimal(1, -40)).sha256
    as_float = definition_from_mapping(_minimal(1.0, -40.0)).sha256
    assert as_int == as_float


def test_compact_number() -> None:
    assert compact_number(2.0) == 2
    assert isinstance(compact_number(2.0), int)
    assert compact_number(0.1) == 0.1
    assert math.isinf(compact_number(math.inf))


def test_canonical_bytes_refuse_nan() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_bytes({"x": math.nan})
