"""Settings parsing, energy integration/persistence and the reconnect backoff (no broker needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from bmsgate.homeassistant.energy import EnergyIntegrator, EnergyTotals, SinkState, split_trapezoid, write_json_atomic
from bmsgate.homeassistant.settings import MqttSettings

# -- settings -----------------------------------------------------------------------------------------


def test_url_form_fills_connection_fields() -> None:
    s = MqttSettings.model_validate("mqtt://gate%40way:p%3Ass@broker.lan:1884")
    assert (s.host, s.port, s.username, s.resolved_password(), s.tls) == ("broker.lan", 1884, "gate@way", "p:ss", None)
    assert s.display_url() == "mqtt://gate@way@broker.lan:1884"
    assert "p:ss" not in repr(s)


def test_mqtts_defaults_to_8883_with_tls_and_explicit_keys_win() -> None:
    s = MqttSettings.model_validate({"url": "mqtts://broker.lan", "username": "other"})
    assert (s.port, s.username) == (8883, "other")
    assert s.tls is not None
    assert s.tls.ca_file is None


@pytest.mark.parametrize(
    "data",
    [
        {"url": "http://broker"},
        {"url": "mqtt://"},
        {"url": "mqtt://host:99999"},
        {"unknown_key": 1},
        {"password": "a", "password_env": "B"},
        {"password_env": "BMSGATE_TEST_SURELY_UNSET"},
        {"base_topic": "bms/#"},
        {"discovery_prefix": "/homeassistant"},
        {"reconnect_initial": 10, "reconnect_max": 1},
        {"tls": {"ca_file": "/nonexistent/ca.pem"}},
        {"tls": {"key_file": "/etc/hostname"}},
        {"qos": 3},
    ],
)
def test_invalid_settings_are_rejected(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MqttSettings.model_validate(data)


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMSGATE_TEST_MQTT_PW", "s3cret")
    s = MqttSettings.model_validate({"username": "u", "password_env": "BMSGATE_TEST_MQTT_PW"})
    assert s.resolved_password() == "s3cret"
    assert MqttSettings().resolved_password() is None


def test_derived_defaults() -> None:
    s = MqttSettings(gateway_id="garage", discovery_prefix="ha")
    assert s.effective_client_id == "bmsgate-garage"
    assert s.effective_ha_status_topic == "ha/status"
    assert s.entity_id_style == "default_entity_id"
    assert s.allow_control is False


# -- energy -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p0", "p1", "dt", "expected"),
    [
        (100.0, 100.0, 10.0, (1000.0, 0.0)),
        (-100.0, -300.0, 10.0, (0.0, 2000.0)),
        (100.0, -100.0, 10.0, (250.0, 250.0)),
        (-300.0, 100.0, 4.0, (50.0, 450.0)),
        (0.0, 0.0, 5.0, (0.0, 0.0)),
        (100.0, 100.0, 0.0, (0.0, 0.0)),
    ],
)
def test_split_trapezoid(p0: float, p1: float, dt: float, expected: tuple[float, float]) -> None:
    charged, discharged = split_trapezoid(p0, p1, dt)
    assert charged == pytest.approx(expected[0])
    assert discharged == pytest.approx(expected[1])


def test_integrator_skips_gaps_duplicates_and_missing_power() -> None:
    energy = EnergyIntegrator(max_gap=30.0)
    assert energy.totals("b") is None
    energy.add("b", 0.0, 3600.0)
    energy.add("b", 10.0, 3600.0)  # 10 s at 3.6 kW = 0.01 kWh
    energy.add("b", 10.0, 99999.0)  # same timestamp: ignored
    energy.add("b", 5.0, 99999.0)  # older: ignored
    energy.add("b", 100.0, 3600.0)  # 90 s gap: not integrated
    energy.add("b", 110.0, None)  # breaks the chain
    energy.add("b", 120.0, -3600.0)
    energy.add("b", 130.0, -3600.0)
    energy.add("b", 140.0, math.nan)
    totals = energy.totals("b")
    assert totals is not None
    assert totals.charged_kwh == pytest.approx(0.01)
    assert totals.discharged_kwh == pytest.approx(0.01)
    energy.add("b", 145.0, -3600.0, max_gap=1.0)  # a per-call gap limit
    assert energy.totals("b") == totals


def test_state_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    state = SinkState(path, max_gap=60.0)
    state.energy.add("b", 0.0, 1000.0)
    state.energy.add("b", 36.0, 1000.0)
    state.identities["b"] = "sn_1"
    state.save()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    again = SinkState(path, max_gap=60.0)
    again.load()
    assert again.identities == {"b": "sn_1"}
    totals = again.energy.totals("b")
    assert totals is not None
    assert totals.charged_kwh == pytest.approx(0.01)
    # a quick restart continues the integration from the persisted last sample
    again.energy.add("b", 72.0, 1000.0)
    assert again.energy.totals("b").charged_kwh == pytest.approx(0.02)  # type: ignore[union-attr]


def test_only_saved_energy_is_published(tmp_path: Path) -> None:
    state = SinkState(tmp_path / "state.json", max_gap=60.0)
    assert state.published_energy("b") is None
    state.energy.add("b", 0.0, 3600.0)
    state.energy.add("b", 10.0, 3600.0)
    assert state.published_energy("b") == EnergyTotals()  # a restart now would start from zero too
    state.save()
    state.energy.add("b", 20.0, 3600.0)
    assert state.published_energy("b") == EnergyTotals(0.01, 0.0)
    again = SinkState(state.path, max_gap=60.0)
    again.load()
    assert again.published_energy("b") == state.published_energy("b")


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"version": 7}', '{"version": 1, "energy": {"b": {"charged_kwh": "x"}}}'],
)
def test_bad_state_file_starts_from_zero(tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_text(content, encoding="utf-8")
    state = SinkState(path)
    state.load()
    assert state.energy.totals("b") is None
    assert caplog.records


def test_missing_state_file_is_fine(tmp_path: Path) -> None:
    state = SinkState(tmp_path / "none.json")
    state.load()
    assert state.to_dict() == {"version": 1, "identities": {}, "energy": {}}


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
