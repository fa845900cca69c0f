"""Definition validation: errors name the file, the field and the reason; files are data only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bmsgate.errors import DefinitionError
from bmsgate.protocols import definition_from_text, get_protocol, load_definition, load_protocol_file
from bmsgate.protocols.definition import definition_from_mapping, normalize_uuid, parse_hex

JBD_TEXT = (Path(__file__).parents[2] / "src/bmsgate/data/protocols/jbd.yaml").read_text()


def _jbd() -> dict[str, Any]:
    data = yaml.safe_load(JBD_TEXT)
    assert isinstance(data, dict)
    return data


def _error(data: Any) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        definition_from_mapping(data, source="test.yaml")
    return info.value


def test_builtin_jbd_loads() -> None:
    assert get_protocol("jbd").definition.name == "jbd"


def test_unknown_key_is_named() -> None:
    data = _jbd()
    data["framing"]["stat"] = 1
    error = _error(data)
    assert error.source == "test.yaml"
    assert error.field == "framing.stat"
    assert "Extra inputs are not permitted" in error.reason


def test_bad_scale_type_names_the_field_path() -> None:
    data = _jbd()
    data["replies"][3]["fields"][0]["scale"] = "ten"
    error = _error(data)
    assert error.field == "replies[3].fields[0].scale"
    assert str(error).startswith("test.yaml: replies[3].fields[0].scale:")


def test_unknown_target_is_explained() -> None:
    data = _jbd()
    data["replies"][3]["fields"][0]["target"] = "voltag"
    assert "unknown target 'voltag'" in _error(data).reason


def test_unknown_alarm_name_is_rejected() -> None:
    data = _jbd()
    data["replies"][3]["fields"][8]["flags"][0] = "cell_too_high"
    error = _error(data)
    assert "flags" in error.field


def test_unknown_checksum_algorithm_lists_the_choices() -> None:
    data = _jbd()
    data["framing"]["checksum"]["algorithm"] = "md5"
    assert "choose one of" in _error(data).reason


def test_length_and_fixed_length_are_exclusive() -> None:
    data = _jbd()
    data["framing"]["fixed_length"] = 30
    assert "exactly one of 'length' and 'fixed_length'" in _error(data).reason


def test_request_expecting_an_undefined_reply() -> None:
    data = _jbd()
    data["requests"][0]["reply"] = 0x42
    assert "0x42" in _error(data).reason


def test_count_variable_must_be_set_somewhere() -> None:
    data = _jbd()
    data["replies"][3]["fields"][-1]["count"] = "var.sensors"
    assert "var.sensors" in _error(data).reason


def test_list_target_needs_a_count() -> None:
    data = _jbd()
    del data["replies"][4]["fields"][0]["count"]
    assert "need 'count'" in _error(data).reason


def test_string_needs_a_size() -> None:
    data = _jbd()
    del data["replies"][5]["fields"][0]["size"]
    assert "needs a size" in _error(data).reason


def test_bad_hex_in_a_request() -> None:
    data = _jbd()
    data["requests"][0]["frame"] = "DD A5 0"
    error = _error(data)
    assert error.field == "requests[0].frame"  # list index
    assert "hex digits" in error.reason


def test_wrong_request_checksum_is_caught_at_load(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(JBD_TEXT.replace('"DD A5 03 00 FF FD 77"', '"DD A5 03 00 FF FE 77"'))
    with pytest.raises(DefinitionError, match=r"requests.basic_info.frame: checksum"):
        load_protocol_file(path)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nframing: [unclosed\n")
    with pytest.raises(DefinitionError, match=r"broken.yaml: line \d+, column \d+: invalid YAML"):
        load_definition(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read the file"):
        load_definition(tmp_path / "absent.yaml")


def test_top_level_must_be_a_mapping() -> None:
    assert "mapping" in _error(["a"]).reason


def test_python_object_tags_are_never_constructed() -> None:
    # A definition is data: safe_load refuses tags that would construct objects or run code.
    text = "name: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(DefinitionError, match="invalid YAML"):
        definition_from_text(text, source="evil.yaml")


def test_user_copy_behaves_like_the_builtin(tmp_path: Path) -> None:
    path = tmp_path / "jbd-copy.yaml"
    path.write_text(JBD_TEXT)
    copy = load_protocol_file(path)
    frame = bytes.fromhex("DD0400080F450F3D0F370F3DFEC677")
    assert copy.decode([frame], timestamp=0).to_dict() == get_protocol("jbd").decode([frame], timestamp=0).to_dict()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ff01", "0000ff01-0000-1000-8000-00805f9b34fb"),
        ("0000FF01-0000-1000-8000-00805F9B34FB", "0000ff01-0000-1000-8000-00805f9b34fb"),
    ],
)
def test_uuid_forms(text: str, expected: str) -> None:
    assert normalize_uuid(text) == expected


def test_uuid_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="UUID"):
        normalize_uuid("xyz")


def test_hex_forms() -> None:
    assert parse_hex("DD:A5 03-00") == b"\xdd\xa5\x03\x00"


def test_advertisement_matching() -> None:
    jbd = get_protocol("jbd").definition
    common: dict[str, list[Any]] = {"service_uuids": [], "manufacturer_ids": []}
    assert jbd.matches_advertisement(name="JBD-SP04S034", address="11:22:33:44:55:66", **common)
    assert jbd.matches_advertisement(name="my battery", address="A4:C1:37:00:11:22", **common)
    assert jbd.matches_advertisement(
        name=None, address="11:22:33:44:55:66", service_uuids=["ff00"], manufacturer_ids=[]
    )
    assert not jbd.matches_advertisement(name="JK-B2A24S", address="C8:47:8C:00:11:22", **common)


def test_binary_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(DefinitionError, match="not a UTF-8 text file"):
        load_definition(path)


@pytest.mark.parametrize("scale", ["nan", "inf", "-inf"])
def test_a_scale_of_inf_or_nan_is_refused(scale: str) -> None:
    with pytest.raises(DefinitionError, match="scale"):
        definition_from_text(JBD_TEXT.replace("scale: 0.01", f"scale: .{scale}".replace(".-", "-."), 1))
