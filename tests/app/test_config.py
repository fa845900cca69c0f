"""Configuration: typed validation with errors that name the key path, the value and the expectation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bmsgate.app.cli.main import main
from bmsgate.app.config import BleTransportConfig, SimulatorTransportConfig, config_from_mapping, load_config
from bmsgate.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "config.example.yaml"


def _base() -> dict[str, Any]:
    return {
        "batteries": [
            {"id": "house", "protocol": "jbd", "transport": {"type": "ble", "address": "a4:c1:37:00:11:22"}},
            {"id": "shed", "protocol": "jbd", "transport": {"type": "simulator", "cells": 8}},
        ]
    }


def _error(data: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, source="test.yaml")
    return info.value


def test_minimal_config_and_defaults() -> None:
    config = config_from_mapping(_base())
    house, shed = config.batteries
    assert isinstance(house.transport, BleTransportConfig)
    assert house.transport.address == "A4:C1:37:00:11:22"
    assert house.poll_interval == 10.0
    assert house.stale_budget == 30.0
    assert isinstance(shed.transport, SimulatorTransportConfig)
    assert config.outputs.console.enabled


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert len(config.batteries) >= 2


def test_bad_value_names_key_path_value_and_expectation() -> None:
    data = _base()
    data["batteries"][0]["poll_interval"] = "often"
    error = _error(data)
    assert error.key_path == "batteries[0].poll_interval"
    assert "'often'" in str(error)
    assert "valid number" in str(error)


def test_bad_transport_field_path_skips_the_union_tag() -> None:
    data = _base()
    data["batteries"][0]["transport"]["address"] = "not-a-mac"
    error = _error(data)
    assert error.key_path == "batteries[0].transport.address"
    assert "MAC address" in str(error)


def test_unknown_transport_type() -> None:
    data = _base()
    data["batteries"][1]["transport"]["type"] = "zigbee"
    error = _error(data)
    assert error.key_path == "batteries[1].transport"
    assert "zigbee" in str(error)


def test_unknown_key_is_reported() -> None:
    data = _base()
    data["batteries"][0]["pol_interval"] = 5
    error = _error(data)
    assert error.key_path == "batteries[0].pol_interval"
    assert "unknown key" in str(error)


def test_missing_key_is_reported() -> None:
    data = _base()
    del data["batteries"][0]["transport"]
    error = _error(data)
    assert error.key_path == "batteries[0].transport"
    assert "required" in str(error)


def test_duplicate_ids() -> None:
    data = _base()
    data["batteries"][1]["id"] = "house"
    assert "used twice" in str(_error(data))


def test_battery_id_form() -> None:
    data = _base()
    data["batteries"][0]["id"] = "House Battery"
    error = _error(data)
    assert error.key_path == "batteries[0].id"


def test_protocol_or_protocol_file() -> None:
    data = _base()
    data["batteries"][0]["protocol_file"] = "x.yaml"
    assert "exactly one of 'protocol'" in str(_error(data))


def test_environment_variables_for_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _base()
    data["batteries"][0]["transport"]["pin"] = "${BMS_PIN}"
    monkeypatch.setenv("BMS_PIN", "123456")
    config = config_from_mapping(data)
    transport = config.batteries[0].transport
    assert isinstance(transport, BleTransportConfig)
    assert transport.pin == "123456"
    monkeypatch.delenv("BMS_PIN")
    error = _error(data)
    assert error.key_path == "batteries[0].transport.pin"
    assert "BMS_PIN is not set" in str(error)


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("batteries: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: invalid YAML"):
        load_config(path)


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    data = _base()
    data["batteries"][0]["transport"]["type"] = "zigbee"
    bad.write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bmsgate: error: ")
    assert "batteries[0].transport" in err
    assert "Traceback" not in err
    assert main(["config", "check", str(tmp_path / "absent.yaml")]) == 2


def test_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("batteries: []\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not a UTF-8 text file \(byte \d+ is 0xe9\)"):
        load_config(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data["batteries"][0].update(protocol="nope"), "no protocol named 'nope'; available: ant,"),
        (
            lambda data: data["batteries"][1].update(transport={"type": "replay", "file": "/nonexistent.jsonl"}),
            "batteries.shed.transport.file",
        ),
        (
            lambda data: data.update(
                inverter={"batteries": ["zzz"]}, outputs={"modbus": {"mode": "tcp", "port": 5020}}
            ),
            "inverter.batteries: unknown battery ids ['zzz']",
        ),
        (
            lambda data: data.update(outputs={"modbus": {"mode": "tcp", "port": 5020, "batteries": ["zzz"]}}),
            "outputs.modbus.batteries: moved to inverter.batteries",
        ),
        (
            lambda data: data.update(outputs={"can": {"interface": "virtual", "limits": {"max_charge_current": 5}}}),
            "outputs.can.limits: moved to inverter.limits",
        ),
        (
            lambda data: data.update(
                inverter={"safe_after": 400}, outputs={"can": {"interface": "virtual", "silent_after": 300}}
            ),
            "silent_after (300 s) must be longer than inverter.safe_after (400 s)",
        ),
        (
            lambda data: data.update(outputs={"modbus": {"mode": "tcp", "register_map": "/nonexistent.yaml"}}),
            "cannot read the file",
        ),
        (
            lambda data: data.update(outputs={"can": {"interface": "virtual", "silent_after": 20}}),
            "silent_after (20 s) must be longer than the bank batteries' stale_after (30 s)",
        ),
    ],
)
def test_config_check_builds_everything_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, message: str
) -> None:
    data = _base()
    change(data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(path)]) == 2
    assert message in capsys.readouterr().err
