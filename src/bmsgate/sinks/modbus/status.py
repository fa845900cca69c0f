"""Compatibility alias: :class:`InverterStatus` and friends moved to :mod:`bmsgate.inverter`.

Both inverter outputs (Modbus and CAN) share them; import from :mod:`bmsgate.inverter`.
"""

from __future__ import annotations

from bmsgate.inverter import BankStatus, FlowDirection, InverterStatus, initial_status

__all__ = ["BankStatus", "FlowDirection", "InverterStatus", "initial_status"]
