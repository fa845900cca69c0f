"""Pure parts: phase machine, liveness, force-charge hysteresis, settings, candump lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

import bmsgate.sinks.can as package
from bmsgate.bank import BankState
from bmsgate.errors import SinkError
from bmsgate.inverter import InverterLiveness
from bmsgate.sinks.can.candump import CandumpWriter, candump_line
from bmsgate.sinks.can.profiles import CanFrame, OutputPhase
from bmsgate.sinks.can.settings import CanSettings
from bmsgate.sinks.can.sink import CanSink
from bmsgate.sinks.can.state import ForceChargeRequest, PhaseTracker

from .helpers import make_snapshot


def test_phase_sequence_keep_safe_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    tracker = PhaseTracker(silent_after=10.0)
    never = BankState(battery_ids=("a",), missing_ids=("a",))
    fresh = BankState(battery_ids=("a",), online=(make_snapshot(),))
    stale = BankState(battery_ids=("a",), offline=(make_snapshot(),), missing_ids=("a",))
    assert tracker.update(never, None) is OutputPhase.WAITING
    assert tracker.update(fresh, 1.0) is OutputPhase.NORMAL
    assert tracker.update(stale, 5.0) is OutputPhase.SAFE
    assert tracker.update(stale, 6.0) is OutputPhase.SAFE
    assert tracker.update(stale, 11.0) is OutputPhase.SILENT
    assert tracker.update(fresh, 0.0) is OutputPhase.NORMAL
    assert [r.levelname for r in caplog.records if "CAN output" in r.message] == ["INFO", "WARNING", "WARNING", "INFO"]
    with pytest.raises(ValueError, match="positive"):
        PhaseTracker(0.0)


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
    with pytest.raises(ValidationError, match="silent_after"):
        CanSettings(safe_after=10, silent_after=5)
    with pytest.raises(ValidationError, match="force_charge_ii_soc"):
        CanSettings(force_charge_soc=2, force_charge_ii_soc=5)
    with pytest.raises(ValidationError):
        CanSettings(manufacturer="ÄÖÜ")


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
