"""Pure parts of the Modbus sink: heartbeat monitor, settings, status, lazy package import."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import bmsgate.inverter.modbus as package
from bmsgate.inverter.modbus.heartbeat import HeartbeatMonitor
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.sink import ModbusSink
from bmsgate.inverter.status import BankStatus, initial_status


def test_heartbeat_monitor_needs_changes_within_the_timeout() -> None:
    monitor = HeartbeatMonitor(timeout=3.0, started=0.0)
    assert monitor.check(2.0) is None
    assert monitor.check(3.5) is False
    monitor.observe(0x00FF, 4.0)
    assert monitor.present is True
    monitor.observe(0x00FF, 6.0)  # same value again is no heartbeat
    assert monitor.check(7.5) is False
    monitor.observe(0xFF00, 8.0)
    assert monitor.check(8.0) is True
    with pytest.raises(ValueError, match="positive"):
        HeartbeatMonitor(timeout=0.0, started=0.0)


def test_settings_validate() -> None:
    assert ModbusSettings().mode == "tcp"
    assert ModbusSettings(heartbeat_in_period=60, heartbeat_in_missed_periods=3).heartbeat_in_timeout == 180
    with pytest.raises(ValidationError, match="serial_port is required"):
        ModbusSettings(mode="rtu")
    with pytest.raises(ValidationError, match="serial_port is required"):
        ModbusSettings(mode="client", client_transport="rtu")
    with pytest.raises(ValidationError, match="Extra inputs"):
        ModbusSettings.model_validate({"mode": "tcp", "baud": 9600})
    with pytest.raises(ValidationError):
        ModbusSettings(slave_id=0)


def test_initial_status_is_starting_with_zero_limits() -> None:
    status = initial_status(("a",))
    assert status.state is BankStatus.STARTING
    assert status.to_dict()["limits"]["charge_current"] == 0.0
    assert status.to_dict()["reason"] == "no data"


def test_package_exports_the_sink_lazily() -> None:
    assert package.ModbusSink is ModbusSink
    with pytest.raises(AttributeError):
        _ = package.NoSuchThing
