"""Compatibility alias: :class:`InverterStatus` and friends moved to :mod:`bmsgate.inverter.status`.

Both inverter outputs (Modbus and CAN) share them; import from :mod:`bmsgate.inverter.status`.
"""

from __future__ import annotations

from bmsgate.inverter.status import BankStatus, FlowDirection, InverterStatus, initial_status

__all__ = ["BankStatus", "FlowDirection", "InverterStatus", "initial_status"]
