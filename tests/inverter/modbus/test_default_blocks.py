"""The adapter frees the 2 MB of register blocks pymodbus builds as unused default arguments."""

from __future__ import annotations

from pymodbus.datastore import ModbusSlaveContext

from bmsgate.inverter.modbus.server import release_unused_default_blocks


def test_importing_the_adapter_leaves_each_default_block_one_value() -> None:
    blocks = ModbusSlaveContext.__init__.__kwdefaults__ or {}
    assert set(blocks) == {"di", "co", "ir", "hr"}
    assert [len(block.values) for block in blocks.values()] == [1, 1, 1, 1]
    assert release_unused_default_blocks() == 0
