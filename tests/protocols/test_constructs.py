"""Format versions and engine constructs: a file needing what this engine lacks is refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from bmsgate.catalog import Catalog, Kind
from bmsgate.errors import DefinitionError
from bmsgate.inverter.can.definition import profile_definition
from bmsgate.inverter.modbus.registermap import register_map_definition
from bmsgate.protocols.constructs import CONSTRUCTS, ENGINE_VERSION, constructs_used
from bmsgate.protocols.definition import ProtocolDefinition, definition_from_mapping


def _definition(**extra: Any) -> dict[str, Any]:
    return {
        "name": "mini",
        "title": "Mini",
        "framing": {"start": "AA", "length": {"offset": 1}, "checksum": {"algorithm": "sum8", "end": -1, "at": -1}},
        "requests": [{"name": "poll", "frame": "AA 01"}],
        "replies": {0: {"name": "main", "fields": [{"target": "voltage", "at": 0}]}},
        **extra,
    }


def test_every_builtin_declares_exactly_what_it_uses() -> None:
    for item in Catalog(system_dir="/nonexistent").items(Kind.PROTOCOL):
        definition = item.definition
        assert isinstance(definition, ProtocolDefinition)
        declared = definition.requires
        assert declared is not None, f"{item.name} has no 'requires'"
        assert set(declared) == constructs_used(definition)
        assert set(declared) <= set(CONSTRUCTS)


def test_unknown_construct_is_refused_by_name_before_the_schema() -> None:
    # 'bitfield' would also be an unknown key: the message must be about the construct, not the key.
    data = _definition(requires=["checksum.sum8", "bitfield"], bitfield={"x": 1})
    with pytest.raises(DefinitionError) as info:
        definition_from_mapping(data, source="new.yaml")
    message = str(info.value)
    assert info.value.field == "requires"
    assert "needs engine construct bitfield" in message
    assert f"protocol engine {ENGINE_VERSION}" in message
    assert "Extra inputs" not in message


def test_newer_format_is_refused_with_the_engine_version() -> None:
    expected = rf"format 2 is not supported by this engine \(protocol engine {ENGINE_VERSION}"
    with pytest.raises(DefinitionError, match=expected) as info:
        definition_from_mapping(_definition(format=2, novelty=True))
    assert info.value.field == "format"


def test_requires_cannot_lie() -> None:
    with pytest.raises(DefinitionError, match=r"uses checksum.sum8 but 'requires' does not list it"):
        definition_from_mapping(_definition(requires=[]))
    with pytest.raises(DefinitionError, match=r"'requires' lists shift, which the definition does not use"):
        definition_from_mapping(_definition(requires=["checksum.sum8", "shift"]))
    assert definition_from_mapping(_definition(requires=["checksum.sum8"])).requires == ["checksum.sum8"]


def test_requires_must_be_names() -> None:
    with pytest.raises(DefinitionError, match="list of construct names"):
        definition_from_mapping(_definition(requires="shift"))


def test_undeclared_requires_is_computed_into_the_ir() -> None:
    definition = definition_from_mapping(_definition())
    assert definition.requires is None
    assert definition.ir()["requires"] == ["checksum.sum8"]


def test_constructs_are_detected() -> None:
    field = {"target": "alarms", "at": 0, "codes": {1: "cell_overvoltage"}, "when": {"var": "var.fw", "min": 2}}
    data = _definition()
    data["replies"][0]["fields"] += [{"target": "var.fw", "at": 2, "type": "u24"}, field]
    assert constructs_used(definition_from_mapping(data)) == {"checksum.sum8", "codes", "u24", "when"}


def test_register_map_and_profile_formats_are_checked() -> None:
    with pytest.raises(DefinitionError, match="register-map format 3 is not supported") as info:
        register_map_definition({"format": 3, "name": "x"}, source="x.yaml")
    assert info.value.field == "format"
    with pytest.raises(DefinitionError, match="CAN profile format 2 is not supported"):
        profile_definition({"format": 2, "name": "x"}, source="x.yaml")


def _field_definition(field: dict[str, Any]) -> dict[str, Any]:
    data = _definition()
    data["replies"][0]["fields"] = [field]
    return data


def test_sign_magnitude_is_an_engine_2_construct_and_is_declared() -> None:
    assert ENGINE_VERSION >= 2
    assert "sign_magnitude" in CONSTRUCTS
    field = {"target": "current", "at": 0, "type": "u16", "sign_magnitude": {"sign_bit": 15, "magnitude_bits": 14}}
    definition = definition_from_mapping(_field_definition(field), source="sm.yaml")
    assert "sign_magnitude" in constructs_used(definition)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ({"type": "s16", "sign_magnitude": {"sign_bit": 15, "magnitude_bits": 14}}, "unsigned integer"),
        ({"type": "u8", "sign_magnitude": {"sign_bit": 15, "magnitude_bits": 14}}, "fits in u8"),
        ({"type": "u16", "sign_magnitude": {"sign_bit": 7, "magnitude_bits": 14}}, "below the sign bit"),
        ({"type": "u16", "bit": 3, "sign_magnitude": {"sign_bit": 15, "magnitude_bits": 14}}, "unsigned integer"),
    ],
)
def test_sign_magnitude_is_validated(field: dict[str, Any], reason: str) -> None:
    data = _field_definition({"target": "current", "at": 0, **field})
    with pytest.raises(DefinitionError, match=reason):
        definition_from_mapping(data, source="sm.yaml")


def test_a_service_data_matcher_is_an_engine_5_construct() -> None:
    assert ENGINE_VERSION >= 5
    data = _definition(match=[{"service_uuid": "ffe0", "service_data_uuid": "3333"}])
    definition = definition_from_mapping(data, source="sd.yaml")
    assert "match.service_data_uuid" in constructs_used(definition)
    with pytest.raises(DefinitionError, match=r"uses match.service_data_uuid but 'requires' does not list it"):
        definition_from_mapping({**data, "requires": ["checksum.sum8"]}, source="sd.yaml")
    (matcher,) = definition.match

    def matches(*service_data: str) -> bool:
        return matcher.matches(
            name=None,
            address=None,
            service_uuids=["0000ffe0-0000-1000-8000-00805f9b34fb"],
            manufacturer_ids=[],
            service_data_uuids=service_data,
        )

    assert matches("3333")
    assert matches("00003333-0000-1000-8000-00805f9b34fb")
    assert not matches("ffe1")
    assert not matches()
    assert definition_from_mapping(_definition(match=[{"service_data_uuid": "ffe1"}])).match[0].service_data_uuid
