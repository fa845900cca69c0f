"""A BLE transport over the faithful fake radio, with test timings: shared by the BLE transport tests."""

from __future__ import annotations

import random
from typing import Any

from bmsgate.protocols import CompiledProtocol
from bmsgate.testing import FakeBleakClient, FakeBluetooth
from bmsgate.transports.ble import BleTransport, ReconnectPolicy


def make_transport(radio: FakeBluetooth, protocol: CompiledProtocol, **kwargs: Any) -> BleTransport:
    """A transport to `address` (or `name`) on `radio`; keyword arguments override the test defaults."""
    options: dict[str, Any] = {
        "client_factory": FakeBleakClient,
        "scanner_factory": radio.scanner,
        "scan_timeout": 1.0,
        "connect_timeout": 2.0,
        "reconnect": ReconnectPolicy(attempts=1),
        "rng": random.Random(1),
    }
    options.update(kwargs)
    return BleTransport(protocol, **options)
