"""Supervisor.apply on the real inverter outputs: a register map and a CAN profile swapped while polling.

The catalog supplies the items, the supervisor applies them, a Modbus master reads the result over TCP and
the CAN sink's frame sets follow the new profile — with the pollers and both outputs running throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from pymodbus.client import AsyncModbusTcpClient

from bmsgate.catalog import default_catalog
from bmsgate.errors import ConfigError
from bmsgate.inverter.can.profiles import CanProfile
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.sink import CanSink
from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.modbus.registermap import RegisterMap
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.sink import ModbusSink
from bmsgate.inverter.modbus.tcp import ModbusTcpServer
from bmsgate.inverter.settings import InverterSettings
from bmsgate.protocols import get_protocol
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import PackConfig
from bmsgate.runtime.supervisor import BatteryRuntime, ReplaceOutputItem, Supervisor
from bmsgate.transports.simulator import SimulatorTransport

from ..inverter.can.helpers import channel_name
from ..inverter.modbus.helpers import free_port

GENERIC_SOC = 0x0100
FRONIUS_SOC = 303


def battery(battery_id: str) -> BatteryRuntime:
    jbd = get_protocol("jbd")
    transport = SimulatorTransport(jbd, PackConfig(cells=16), battery_id=battery_id)
    options = ClientOptions(request_timeout=1.0, retries=0, poll_deadline=3.0)
    client = BatteryClient(jbd, transport, battery_id=battery_id, options=options)
    return BatteryRuntime(battery_id, battery_id, client, poll_interval=0.05, stale_after=10.0)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[None]:
    task = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: supervisor.running)
        yield
    finally:
        supervisor.request_stop()
        await asyncio.wait_for(task, 5)


async def test_register_map_and_can_profile_swapped_through_the_supervisor() -> None:
    catalog = default_catalog()
    controller = InverterController(InverterSettings(batteries=("house",), refresh_interval=0.05))
    modbus_settings = ModbusSettings(mode="tcp", port=free_port())
    modbus = ModbusSink(modbus_settings, controller, register_map=catalog.register_map("generic"))
    can = CanSink(
        CanSettings(interface="virtual", channel=channel_name(), period=0.05),
        controller,
        profile=catalog.can_profile("pylon"),
    )
    supervisor = Supervisor([battery("house")], [controller, modbus, can])
    client = AsyncModbusTcpClient("127.0.0.1", port=modbus_settings.port, timeout=1, retries=0, reconnect_delay=0)
    try:
        async with running(supervisor):
            assert isinstance(modbus.endpoint, ModbusTcpServer)
            await asyncio.wait_for(modbus.endpoint.listening.wait(), 5)
            assert await client.connect()
            await until(lambda: controller.status.sequence > 2 and not controller.status.bank.stale)

            async def soc(address: int) -> int | None:
                response = await client.read_holding_registers(address, count=1, slave=1)
                return None if response.isError() else int(response.registers[0])

            assert await soc(GENERIC_SOC) is not None
            inverse = await supervisor.apply(ReplaceOutputItem("modbus", catalog.register_map("byd-hvm-fronius")))
            assert isinstance(inverse, ReplaceOutputItem)
            assert isinstance(inverse.item, RegisterMap) and inverse.item.name == "generic"
            assert await soc(FRONIUS_SOC) is not None
            assert await soc(GENERIC_SOC) is None  # the old map's registers are gone, on the same server
            await supervisor.apply(inverse)
            assert await soc(GENERIC_SOC) is not None

            sma = catalog.can_profile("sma")
            can_inverse = await supervisor.apply(ReplaceOutputItem("can", sma))
            assert isinstance(can_inverse, ReplaceOutputItem) and isinstance(can_inverse.item, CanProfile)
            sets = can.frame_sets
            await until(lambda: can.frame_sets >= sets + 2)
            assert {frame.arbitration_id for frame in can.last_sent} == set(sma.frame_ids)

            with pytest.raises(ConfigError, match="can"):
                await supervisor.apply(ReplaceOutputItem("can", catalog.register_map("generic")))
            with pytest.raises(ConfigError, match="inverter"):
                await supervisor.apply(ReplaceOutputItem("inverter", sma))
            assert supervisor.link_stats("house") is not None
            stats = supervisor.link_stats("house")
            assert stats is not None and stats.failures == 0
            assert modbus.endpoint is not None and can.bus_failures == 0
    finally:
        client.close()
