"""Configuration: typed validation with errors that name the key path, the value and the expectation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bmsgate.cli import main
from bmsgate.config import BleTransportConfig, SimulatorTransportConfig, config_from_mapping, load_config
from bmsgate.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "config.example.yaml"


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


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMSGATE_MQTT_PASSWORD", "secret")
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


def test_config_check_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BMSGATE_MQTT_PASSWORD", "secret")
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
