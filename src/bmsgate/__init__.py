"""bmsgate: make a lithium battery's Bluetooth BMS useful to the rest of a solar installation.

The curated public API; everything else is reachable through its module (``bmsgate.transports.ble``,
``bmsgate.homeassistant``, ...). A test keeps this list sorted and importable.
"""

from bmsgate.errors import (
    BmsgateError,
    CommandRefused,
    ConfigError,
    DecodeError,
    DefinitionError,
    DeviceError,
    DeviceTimeout,
    FrameError,
    TransportError,
)
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo
from bmsgate.protocols import CompiledProtocol, decode, get_protocol, load_protocol_file
from bmsgate.runtime.client import BatteryClient, ClientOptions, LinkStatistics
from bmsgate.runtime.hub import SnapshotHub

__all__ = [
    "Alarm",
    "BatteryClient",
    "BatterySnapshot",
    "BmsgateError",
    "ClientOptions",
    "CommandRefused",
    "CompiledProtocol",
    "ConfigError",
    "DecodeError",
    "DefinitionError",
    "DeviceError",
    "DeviceInfo",
    "DeviceTimeout",
    "FrameError",
    "LinkStatistics",
    "SnapshotHub",
    "TransportError",
    "__version__",
    "decode",
    "get_protocol",
    "load_protocol_file",
]

__version__ = "0.1.0"
