"""Configuration: typed validation with errors that name the key path, the value and the expectation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from bmsgate.app.cli.main import main
from bmsgate.app.config import BleTransportConfig, SimulatorTransportConfig, config_from_mapping, load_config
from bmsgate.app.gateway import build_gateway
from bmsgate.app.outputs import configured_sink_builders
from bmsgate.errors import ConfigError
from bmsgate.homeassistant.sink import HomeAssistantSink
from bmsgate.runtime.simulation import SIMULATED_SECRET

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
        (lambda data: data["batteries"][0].update(protocol="nope"), "no protocol named 'nope'; available: abc,"),
        (
            lambda data: data["batteries"][1].update(transport={"type": "replay", "file": "/nonexistent.jsonl"}),
            "batteries[1].transport.file",
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


# -- the state directory -------------------------------------------------------------------------------


def test_state_dir_defaults_to_systemds_state_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/bmsgate:{tmp_path}/other")
    config = config_from_mapping(_base())
    assert config.state_dir == tmp_path / "bmsgate"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert config_from_mapping(_base()).state_dir == tmp_path / "xdg" / "bmsgate"


def test_the_energy_counters_land_in_the_state_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    data = _base()
    data["outputs"] = {"mqtt": {"host": "127.0.0.1"}}
    gateway = build_gateway(config_from_mapping(data), sink_builders=configured_sink_builders())
    (sink,) = (sink for sink in gateway.supervisor.sinks if isinstance(sink, HomeAssistantSink))
    assert sink.settings.state_dir == tmp_path


def _unwritable_dirs(tmp_path: Path) -> list[Path]:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    dirs = [blocker / "state"]
    # A read-only mount is what ProtectSystem=strict makes of /var; /proc/sys is one where it exists.
    if Path("/proc/sys").is_dir() and not os.access("/proc/sys", os.W_OK):
        dirs.append(Path("/proc/sys/bmsgate-state"))
    return dirs


def test_config_check_and_run_refuse_an_unwritable_state_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for state_dir in _unwritable_dirs(tmp_path):
        data = _base()
        data["state_dir"] = str(state_dir)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        assert main(["config", "check", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert err.startswith(f"bmsgate: error: {path}: state_dir: cannot ")
        assert str(state_dir) in err
        assert main(["run", "-c", str(path), "--duration", "0.1"]) == 2
        assert f"{path}: state_dir: cannot " in capsys.readouterr().err


def test_config_check_creates_no_state_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _base()
    data["state_dir"] = str(tmp_path / "state" / "bmsgate")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(path)]) == 0
    capsys.readouterr()
    assert not (tmp_path / "state").exists()


# -- every problem at once -----------------------------------------------------------------------------


def test_every_problem_is_reported_each_with_file_key_value_and_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _base()
    data["batteries"][0]["poll_interval"] = "often"
    data["batteries"][1]["transport"]["cells"] = 99
    data["batteries"][1]["pol_interval"] = 5
    data["logging"] = {"level": "LOUD"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith(f"bmsgate: error: {path}: ") for line in lines)
    text = "\n".join(lines)
    assert "batteries[0].poll_interval: Input should be a valid number" in text
    assert "(got 'often')" in text
    assert "batteries[1].transport.cells: Input should be less than or equal to 32 (got 99)" in text
    assert "batteries[1].pol_interval: unknown key" in text
    assert "logging.level: " in text
    assert "more problem" not in text


def test_config_error_carries_its_problems() -> None:
    data = _base()
    data["batteries"][0]["poll_interval"] = "often"
    data["batteries"][1]["id"] = "Bad Id"
    error = _error(data)
    assert [problem.key_path for problem in error.problems] == ["batteries[0].poll_interval", "batteries[1].id"]
    assert {problem.source for problem in error.problems} == {"test.yaml"}
    assert error.key_path == "batteries[0].poll_interval"  # the first, as before
    assert str(error).splitlines() == [str(problem) for problem in error.problems]


def test_an_unknown_protocol_names_the_file_and_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _base()
    data["batteries"][1]["protocol"] = "x"
    data["batteries"][0]["protocol"] = "y"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"bmsgate: error: {path}: batteries[0].protocol: no protocol named 'y'; available: ")
    assert lines[1].startswith(f"bmsgate: error: {path}: batteries[1].protocol: no protocol named 'x'; available: ")
    assert "jbd" in lines[1]
    assert "catalog" not in lines[1].split("available")[0]


def test_pydantics_value_error_prefix_is_never_shown() -> None:
    data = _base()
    data["batteries"][0]["protocol_file"] = "x.yaml"
    data["outputs"] = {"mqtt": "http://x"}
    error = _error(data)
    assert "Value error" not in str(error)
    assert "scheme must be mqtt://" in str(error)


# -- validation gaps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stale_after", [2, 10])
def test_stale_after_must_be_longer_than_a_poll(stale_after: float) -> None:
    data = _base()
    data["batteries"][0].update(poll_interval=10, stale_after=stale_after)
    error = _error(data)
    assert error.key_path == "batteries[0].stale_after"
    assert "must be longer than poll_interval (10 s)" in str(error)
    data["batteries"][0]["stale_after"] = 25
    assert config_from_mapping(data).batteries[0].stale_budget == 25


def test_stale_after_is_checked_even_when_another_key_is_wrong() -> None:
    data = _base()
    data["batteries"][0].update(poll_interval=10, stale_after=5, pol_interval=3)
    assert {problem.key_path for problem in _error(data).problems} == {
        "batteries[0].stale_after",
        "batteries[0].pol_interval",
    }


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("transport", "cells"),
        ("transport", "ntc_count"),
        ("transport", "drift_cell"),
        ("options", "retries"),
        (None, "ble_slots"),
    ],
)
def test_counts_are_whole_numbers_not_booleans(section: str | None, key: str) -> None:
    data = _base()
    if section is None:
        data["scheduler"] = {key: True}
        path = f"scheduler.{key}"
    else:
        data["batteries"][1].setdefault(section, {})[key] = True
        path = f"batteries[1].{section}.{key}"
    error = _error(data)
    assert error.key_path == path
    assert "valid integer (got True)" in str(error)


def test_an_unknown_protocol_is_reported_with_the_schema_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both at once: fixing the schema error must not reveal a second round of problems.
    data = _base()
    data["batteries"][1]["protocol"] = "nosuch"
    data["batteries"][1]["poll_interval"] = -1
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: batteries[1].poll_interval:" in err
    assert f"{path}: batteries[1].protocol: no protocol named 'nosuch'" in err


def test_a_protocol_secret_reaches_the_session_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _base()
    data["batteries"][1]["secret"] = "${SHED_PIN}"
    monkeypatch.setenv("SHED_PIN", "4321")
    config = config_from_mapping(data)
    assert "4321" not in repr(config) and "4321" not in str(config.model_dump(mode="json"))
    gateway = build_gateway(config)
    house, shed = (gateway.supervisor.batteries[name].client for name in ("house", "shed"))
    assert shed.options.secret == b"4321" and house.options.secret is None
    assert "4321" not in repr(shed.options)
    assert shed.session._secret == b"4321"


def test_a_protocol_that_logs_in_needs_the_batterys_secret() -> None:
    data = _base()
    data["batteries"][0]["protocol"] = "x123smart"
    with pytest.raises(ConfigError) as info:
        build_gateway(config_from_mapping(data))
    (problem,) = info.value.problems
    assert problem.key_path == "batteries[0].secret" and "x123smart" in problem.reason
    data["batteries"][0]["secret"] = "1234"
    house = build_gateway(config_from_mapping(data)).supervisor.batteries["house"].client
    assert house.options.secret == b"1234"


def test_a_simulated_pack_that_logs_in_gets_the_simulators_secret() -> None:
    data = _base()
    data["batteries"][1]["protocol"] = "x123smart"
    shed = build_gateway(config_from_mapping(data)).supervisor.batteries["shed"].client
    assert shed.options.secret == SIMULATED_SECRET
