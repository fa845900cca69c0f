"""bmsgate: make a lithium battery's Bluetooth BMS useful to the rest of a solar installation."""

from bmsgate.errors import BmsgateError
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo

__all__ = ["Alarm", "BatterySnapshot", "BmsgateError", "DeviceInfo", "__version__"]

__version__ = "0.1.0"
