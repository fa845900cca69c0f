"""The simulator transport keeps a bounded history: a demo that runs for weeks does not grow."""

from __future__ import annotations

from bmsgate.protocols import get_protocol
from bmsgate.runtime.client import BatteryClient
from bmsgate.runtime.simulation import PackConfig
from bmsgate.transports.simulator import SimulatorTransport


async def test_the_write_history_is_bounded() -> None:
    jbd = get_protocol("jbd")
    transport = SimulatorTransport(jbd, PackConfig(cells=4))
    async with BatteryClient(jbd, transport) as client:
        for _ in range(150):
            await client.read()
    assert transport.write_count >= 300
    assert transport.writes.maxlen is not None
    assert len(transport.writes) == transport.writes.maxlen < transport.write_count
