"""Real-radio checks (``pytest -m hardware``; set BMSGATE_BLE_ADDRESS and BMSGATE_BLE_PROTOCOL)."""

from __future__ import annotations

import os

import pytest

from bmsgate.protocols import get_protocol
from bmsgate.runtime.client import BatteryClient
from bmsgate.transports.ble import BleScanner, BleTransport

pytestmark = pytest.mark.hardware


async def test_real_scan_hears_something() -> None:
    found = await BleScanner(adapter=os.environ.get("BMSGATE_BLE_ADAPTER")).scan(5.0)
    assert found


async def test_real_read() -> None:
    address = os.environ.get("BMSGATE_BLE_ADDRESS")
    if not address:
        pytest.skip("set BMSGATE_BLE_ADDRESS")
    protocol = get_protocol(os.environ.get("BMSGATE_BLE_PROTOCOL", "jbd"))
    transport = BleTransport(protocol, address, adapter=os.environ.get("BMSGATE_BLE_ADAPTER"))
    async with BatteryClient(protocol, transport) as client:
        snapshot = await client.read()
    assert snapshot.cell_count > 0
