"""Inverter bridge over Modbus: register maps as data, a server (TCP/RTU) or a client writer.

The pure parts (settings, status, register maps) import without pymodbus; :class:`ModbusSink` is
imported on first use. Its TCP server is our own; its RTU server and client writer need the ``[modbus]``
extra (pymodbus), loaded only for those modes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bmsgate.inverter.modbus.registermap import RegisterKind, RegisterMap, load_register_map
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.status import BankStatus, FlowDirection, InverterStatus

if TYPE_CHECKING:
    from bmsgate.inverter.modbus.sink import ModbusSink

__all__ = [
    "BankStatus",
    "FlowDirection",
    "InverterStatus",
    "ModbusSettings",
    "ModbusSink",
    "RegisterKind",
    "RegisterMap",
    "load_register_map",
]


def __getattr__(name: str) -> Any:
    if name == "ModbusSink":
        from bmsgate.inverter.modbus.sink import ModbusSink  # noqa: PLC0415

        return ModbusSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
