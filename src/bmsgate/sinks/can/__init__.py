"""Inverter bridge over CAN: profiles (DBC + YAML) as data, python-can for the bus.

Only the settings are imported eagerly, so a configuration file can be validated without the ``[can]``
extra; profiles (cantools) and :class:`CanSink` (python-can) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bmsgate.sinks.can.settings import CanSettings

if TYPE_CHECKING:
    from bmsgate.sinks.can.profiles import (
        CanFrame,
        CanProfile,
        OutputPhase,
        build_frames,
        builtin_profile_names,
        load_profile,
    )
    from bmsgate.sinks.can.sink import CanSink

_LAZY = {
    "CanFrame": "bmsgate.sinks.can.profiles",
    "CanProfile": "bmsgate.sinks.can.profiles",
    "OutputPhase": "bmsgate.sinks.can.profiles",
    "build_frames": "bmsgate.sinks.can.profiles",
    "builtin_profile_names": "bmsgate.sinks.can.profiles",
    "load_profile": "bmsgate.sinks.can.profiles",
    "CanSink": "bmsgate.sinks.can.sink",
}

__all__ = [
    "CanFrame",
    "CanProfile",
    "CanSettings",
    "CanSink",
    "OutputPhase",
    "build_frames",
    "builtin_profile_names",
    "load_profile",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
