"""Pure parts: phase machine, liveness, force-charge hysteresis, settings, candump lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

import bmsgate.inverter.can as package
from bmsgate.errors import ConfigError, SinkError
from bmsgate.inverter.bank import BankState
from bmsgate.inverter.can.candump import CandumpWriter, candump_line
from bmsgate.inverter.can.profiles import CanFrame, OutputPhase
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.sink import CanSink
from bmsgate.inverter.can.state import ForceChargeRequest, PhaseTracker
from bmsgate.inverter.status import InverterLiveness

from .helpers import can_sink, make_snapshot


def test_phase_sequence_keep_safe_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    tracker = PhaseTracker(silent_after=10.0)
    never = BankState(battery_ids=("a",), missing_ids=("a",))
    fresh = BankState(battery_ids=("a",), online=(make_snapshot(),))
    stale = BankState(battery_ids=("a",), offline=(make_snapshot(),), missing_ids=("a",))
    assert tracker.update(never, None, now=0.0) is OutputPhase.WAITING
    assert tracker.update(fresh, 1.0, now=1.0) is OutputPhase.NORMAL
    assert tracker.update(stale, 5.0, now=5.0) is OutputPhase.SAFE
    assert tracker.update(stale, 6.0, now=6.0) is OutputPhase.SAFE
    assert tracker.update(stale, 11.0, now=11.0) is OutputPhase.SILENT
    assert tracker.update(fresh, 0.0, now=12.0) is OutputPhase.NORMAL
    assert [r.levelname for r in caplog.records if "CAN output" in r.message] == ["INFO", "WARNING", "WARNING", "INFO"]
    with pytest.raises(ValueError, match="positive"):
        PhaseTracker(0.0)
    with pytest.raises(ValueError, match="finite"):
        PhaseTracker(float("inf"))
    with pytest.raises(ValueError, match="safe_hold"):
        PhaseTracker(10.0, safe_hold=0.0)


_FRESH = BankState(battery_ids=("a",), online=(make_snapshot(),))
_STALE = BankState(battery_ids=("a",), offline=(make_snapshot(),), missing_ids=("a",))


def test_silence_needs_fresh_data_to_age_past_silent_after_first() -> None:
    # The hub's budget (20 s) is longer than silent_after (8 s): the bank still looks fresh at 19 s.
    tracker = PhaseTracker(silent_after=8.0, safe_hold=3.0)
    assert tracker.update(_FRESH, 0.0, now=100.0) is OutputPhase.NORMAL
    assert tracker.update(_FRESH, 8.0, now=108.0) is OutputPhase.NORMAL
    # Past silent_after the data counts as stale whatever the bank says: safe frames, not silence.
    assert tracker.update(_FRESH, 8.5, now=108.5) is OutputPhase.SAFE
    assert tracker.update(_FRESH, 10.0, now=110.0) is OutputPhase.SAFE
    assert tracker.update(_STALE, 11.0, now=111.0) is OutputPhase.SAFE
    assert tracker.update(_STALE, 11.5, now=111.5) is OutputPhase.SILENT  # 3 s of safe frames sent
    assert tracker.update(_STALE, 30.0, now=130.0) is OutputPhase.SILENT
    assert tracker.update(_FRESH, 0.1, now=131.0) is OutputPhase.NORMAL


@pytest.mark.parametrize("first_stale_age", [8.5, 25.0, 400.0])
def test_keep_safe_silent_order_whatever_the_budgets(first_stale_age: float) -> None:
    # However late staleness is first noticed, silence comes only after `safe_hold` s of safe frames.
    tracker = PhaseTracker(silent_after=8.0, safe_hold=3.0)
    assert tracker.update(_FRESH, 1.0, now=0.0) is OutputPhase.NORMAL
    phases = [tracker.update(_STALE, first_stale_age + step, now=first_stale_age + step) for step in range(6)]
    assert phases == [OutputPhase.SAFE] * 3 + [OutputPhase.SILENT] * 3
    # Data back, then gone again: the hold starts over.
    assert tracker.update(_FRESH, 0.0, now=1000.0) is OutputPhase.NORMAL
    assert tracker.update(_STALE, 50.0, now=1050.0) is OutputPhase.SAFE
    assert tracker.update(_STALE, 52.9, now=1052.9) is OutputPhase.SAFE
    assert tracker.update(_STALE, 53.0, now=1053.0) is OutputPhase.SILENT


def test_liveness_logs_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    monitor = InverterLiveness(timeout=2.0, started=0.0)
    assert monitor.check(1.0) is None
    assert monitor.check(2.5) is False
    monitor.seen(3.0)
    monitor.seen(3.5)
    assert monitor.check(4.0) is True
    assert monitor.check(6.0) is False
    assert monitor.check(7.0) is False
    assert [r.message for r in caplog.records].count("inverter back: sign of life") == 1
    assert sum("missing" in r.message for r in caplog.records) == 2
    with pytest.raises(ValueError, match="positive"):
        InverterLiveness(0.0, 0.0)


def test_force_charge_hysteresis() -> None:
    requests = ForceChargeRequest(soc_1=5.0, soc_2=2.0, hysteresis=5.0)
    assert not requests.update(50.0, under_voltage=False).force_charge_1
    assert requests.update(5.0, under_voltage=False).force_charge_1
    assert requests.update(8.0, under_voltage=False).force_charge_1  # still below 5 + 5
    assert not requests.update(10.0, under_voltage=False).force_charge_1
    low = requests.update(1.5, under_voltage=False)
    assert low.force_charge_1 and low.force_charge_2
    assert requests.update(None, under_voltage=False) == requests.update(60.0, under_voltage=False)
    assert requests.update(60.0, under_voltage=True).force_charge_1


def test_settings_validate() -> None:
    settings = CanSettings(interface="virtual", channel="x", soc_forcing=True)
    assert settings.quirk_overrides == {"soc_forcing": True}
    assert CanSettings(interface="slcan", channel="/dev/ttyACM0").interface_name == "slcan0"
    with pytest.raises(ValidationError, match="Extra inputs"):
        CanSettings.model_validate({"interface": "virtual", "baud": 1})
    with pytest.raises(ValidationError, match="Extra inputs"):
        CanSettings.model_validate({"safe_after": 10})  # moved to the inverter section
    with pytest.raises(ValidationError, match="force_charge_ii_soc"):
        CanSettings(force_charge_soc=2, force_charge_ii_soc=5)
    with pytest.raises(ValidationError):
        CanSettings(manufacturer="ÄÖÜ")


@pytest.mark.parametrize("field", ["silent_after", "period", "keepalive_timeout", "send_timeout", "reopen_backoff_max"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), "inf", "NaN"])
def test_settings_reject_non_finite_numbers(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match="finite"):
        CanSettings.model_validate({field: value})


def test_unwritable_log_file_fails_when_the_sink_is_built(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "x.log"
    with pytest.raises(ConfigError, match=r"outputs\.can\.log_file") as error:
        can_sink(CanSettings(interface="virtual", channel="x", log_file=missing))
    assert str(missing) in str(error.value) and "No such file or directory" in str(error.value)
    assert error.value.key_path == "outputs.can.log_file"
    with pytest.raises(ConfigError, match="Is a directory") as error:
        can_sink(CanSettings(interface="virtual", channel="x", log_file=tmp_path))
    assert str(tmp_path) in str(error.value)
    writable = tmp_path / "ok.log"
    can_sink(CanSettings(interface="virtual", channel="x", log_file=writable))
    assert writable.exists()


def test_candump_writer(tmp_path: Path) -> None:
    frame = CanFrame(0x351, bytes.fromhex("1402E803E803"))
    assert candump_line(frame, 1700000000.1234564, "vcan0") == "(1700000000.123456) vcan0 351#1402E803E803"
    path = tmp_path / "log"
    with CandumpWriter(path, "can0") as writer:
        writer.write([frame, CanFrame(0x35C, b"\xc0\x00")], 1.5)
        assert writer.lines == 2
    assert path.read_text().splitlines() == ["(1.500000) can0 351#1402E803E803", "(1.500000) can0 35C#C000"]
    writer.write([frame], 2.0)  # closed: ignored
    with pytest.raises(SinkError, match="cannot open CAN log"):
        CandumpWriter(tmp_path / "no" / "dir" / "log", "can0").open()


def test_package_exports_the_sink_lazily() -> None:
    assert package.CanSink is CanSink
    with pytest.raises(AttributeError):
        _ = package.NoSuchThing
