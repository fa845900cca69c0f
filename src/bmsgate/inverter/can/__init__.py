"""Inverter bridge over CAN: profiles (DBC + YAML) as data, python-can for the bus.

Only the settings are imported eagerly, so a configuration file can be validated without the ``[can]``
extra; profiles (with their own DBC reader) and :class:`CanSink` (python-can) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bmsgate.inverter.can.settings import CanSettings

if TYPE_CHECKING:
    from bmsgate.inverter.can.profiles import (
        CanFrame,
        CanProfile,
        OutputPhase,
        build_frames,
        load_profile,
    )
    from bmsgate.inverter.can.sink import CanSink

_LAZY = {
    "CanFrame": "bmsgate.inverter.can.profiles",
    "CanProfile": "bmsgate.inverter.can.profiles",
    "OutputPhase": "bmsgate.inverter.can.profiles",
    "build_frames": "bmsgate.inverter.can.profiles",
    "load_profile": "bmsgate.inverter.can.profiles",
    "CanSink": "bmsgate.inverter.can.sink",
}

__all__ = [
    "CanFrame",
    "CanProfile",
    "CanSettings",
    "CanSink",
    "OutputPhase",
    "build_frames",
    "load_profile",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
