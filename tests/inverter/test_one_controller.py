"""One controller behind both inverter outputs: CAN and Modbus present the very same status.

The CAN frames are decoded with the DBC files we ship, the Modbus registers read as a master would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from bmsgate.errors import ConfigError
from bmsgate.inverter.can.profiles import CanProfile, OutputPhase, load_profile
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.sink import CanSink
from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.limits import LimitSettings
from bmsgate.inverter.modbus.registermap import RegisterKind, RegisterMap, load_register_map
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.sink import ModbusSink
from bmsgate.inverter.modbus.tcp import ModbusTcpServer
from bmsgate.inverter.settings import InverterSettings
from bmsgate.model import Alarm
from bmsgate.runtime.hub import SnapshotHub

from .can.helpers import InverterSimulator, channel_name, make_snapshot, wait_for
from .modbus.helpers import FakeClock, free_port

CVL, CCL, DCL, ALARMS, STATUS = 0x0104, 0x0105, 0x0106, 0x0107, 0x0108
OVERVOLTAGE_BIT, STALE_BIT = 1 << 0, 1 << 15
STALE_STATUS = 4


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def decode_can(sink: CanSink) -> dict[int, dict[str, Any]]:
    """The frames the CAN sink would send now, decoded through the profile's DBC."""
    decoded = {}
    for frame in sink.frames:
        layout = sink.profile.database.messages[frame.arbitration_id]
        decoded[frame.arbitration_id] = layout.decode(frame.data[: layout.length])
    return decoded


def phase_of(sink: CanSink) -> OutputPhase:
    return sink.phase


def from_can(signals: dict[int, dict[str, Any]]) -> dict[str, Any]:
    limits, protections = signals[0x351], signals[0x359]
    return {
        "charge_current": round(float(limits["charge_current_limit"]), 1),
        "discharge_current": round(float(limits["discharge_current_limit"]), 1),
        "charge_voltage": round(float(limits["charge_voltage_limit"]), 1),
        "overvoltage": bool(protections["protect_high_voltage"]),
        "safe": bool(protections["protect_system_error"]),
    }


def from_modbus(registers: list[int]) -> dict[str, Any]:
    """Registers 0x0104..0x0108 of the generic map."""
    cvl, ccl, dcl, alarms, status = registers
    return {
        "charge_current": round(ccl / 10, 1),
        "discharge_current": round(dcl / 10, 1),
        "charge_voltage": round(cvl / 100, 1),
        "overvoltage": bool(alarms & OVERVOLTAGE_BIT),
        "safe": status == STALE_STATUS and bool(alarms & STALE_BIT),
    }


def modbus_registers(sink: ModbusSink) -> list[int]:
    holding = sink.store.snapshot(RegisterKind.HOLDING)
    return [holding[address] for address in range(CVL, STATUS + 1)]


def comparable(can: dict[str, Any], modbus: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    # Pylon's stop_charge_with_cvl quirk pins the CVL to the pack voltage while charging is not allowed: that
    # is the profile's encoding of "no charge", not a different limit.
    if can["charge_current"] == 0.0:
        can, modbus = dict(can), dict(modbus)
        del can["charge_voltage"], modbus["charge_voltage"]
    return can, modbus


def both(clock: FakeClock, **settings: Any) -> tuple[SnapshotHub, InverterController, CanSink, ModbusSink]:
    hub = SnapshotHub(clock=clock)
    hub.register("a", stale_after=10.0)
    hub.register("b", stale_after=10.0)
    limits = LimitSettings(max_charge_current=50, max_discharge_current=80, recovery_hold=5.0, ramp_rate=2.0)
    controller = InverterController(InverterSettings(batteries=("a", "b"), limits=limits, **settings), clock=clock)
    can = CanSink(CanSettings(interface="virtual", channel=channel_name(), silent_after=60), controller)
    modbus = ModbusSink(ModbusSettings(mode="tcp", port=free_port()), controller)
    return hub, controller, can, modbus


def test_both_outputs_present_identical_limits_alarms_and_phase(clock: FakeClock) -> None:
    hub, controller, can, modbus = both(clock)
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def step(seconds: float, *snapshots: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        clock.advance(seconds)
        for snapshot in snapshots:
            hub.publish(snapshot)
        status = controller.refresh(hub, fresh_data=bool(snapshots))
        assert can.refresh() is status
        assert modbus.refresh() is status
        pair = comparable(from_can(decode_can(can)), from_modbus(modbus_registers(modbus)))
        assert pair[0] == pair[1], (status.limits, status.state)
        seen.append(pair)
        return pair

    healthy = (make_snapshot("a"), make_snapshot("b"))
    can_view, _ = step(1.0, *healthy)
    assert can_view["charge_current"] == 100.0  # two packs of 50 A
    assert can.phase is OutputPhase.NORMAL

    # An over-voltage on one pack: both see the alarm and zero charge current at once.
    hot = make_snapshot("a", alarms=frozenset({Alarm.CELL_OVERVOLTAGE}), charge_enabled=False)
    can_view, _ = step(1.0, hot, make_snapshot("b"))
    assert can_view["overvoltage"] and can_view["charge_current"] == 0.0

    # Recovery is slow and on one clock: hold, then a ramp both outputs follow step by step.
    ramp = [step(1.0, *healthy)[0]["charge_current"] for _ in range(12)]
    assert ramp[0] == 0.0
    assert ramp == sorted(ramp) and 0.0 < ramp[-1] < 100.0

    # Every pack stale: both present the safe state (zero limits; CAN's safe phase, Modbus' stale status).
    can_view, modbus_view = step(11.0)
    assert phase_of(can) is OutputPhase.SAFE
    assert can_view["safe"] and modbus_view["safe"]
    assert (can_view["charge_current"], can_view["discharge_current"]) == (0.0, 0.0)
    assert len(seen) == 15


def test_a_stalled_controller_turns_both_outputs_safe(clock: FakeClock) -> None:
    hub, controller, can, modbus = both(clock, status_timeout=5.0)
    hub.publish(make_snapshot("a"))
    hub.publish(make_snapshot("b"))
    controller.refresh(hub, fresh_data=True)
    can.refresh()
    modbus.refresh()
    assert from_modbus(modbus_registers(modbus))["charge_current"] == 100.0
    clock.advance(5.5)  # the hub still calls the data fresh, but no status came for longer than status_timeout
    can.refresh()
    modbus.refresh()
    assert can.phase is OutputPhase.SAFE
    can_view, modbus_view = comparable(from_can(decode_can(can)), from_modbus(modbus_registers(modbus)))
    assert can_view == modbus_view
    assert modbus_view["safe"] and modbus_view["charge_current"] == modbus_view["discharge_current"] == 0.0


@contextlib.asynccontextmanager
async def running(hub: SnapshotHub, *parts: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(part.run(hub)) for part in parts]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_on_the_wire_both_outputs_agree() -> None:
    hub = SnapshotHub()
    hub.register("a", stale_after=60.0)
    controller = InverterController(InverterSettings(batteries=("a",), refresh_interval=0.05))
    channel = channel_name()
    can = CanSink(CanSettings(interface="virtual", channel=channel, period=0.05), controller)
    settings = ModbusSettings(mode="tcp", port=free_port())
    modbus = ModbusSink(settings, controller)
    simulator = InverterSimulator(channel, load_profile("pylon"))
    client = AsyncModbusTcpClient("127.0.0.1", port=settings.port, timeout=1, retries=0, reconnect_delay=0)

    async def views() -> tuple[dict[str, Any], dict[str, Any]]:
        response = await client.read_holding_registers(CVL, count=5, slave=1)
        with simulator.lock:
            signals = dict(simulator.latest)
        return comparable(from_can(signals), from_modbus(list(response.registers)))

    async def agree(predicate: Any) -> dict[str, Any]:
        for _ in range(200):
            if 0x351 in simulator.latest and 0x359 in simulator.latest:
                can_view, modbus_view = await views()
                if can_view == modbus_view and predicate(can_view):
                    return can_view
            await asyncio.sleep(0.02)
        raise AssertionError(f"the outputs never agreed: {await views()}")

    try:
        hub.publish(make_snapshot("a"))
        async with running(hub, controller, can, modbus):
            assert isinstance(modbus.endpoint, ModbusTcpServer)
            await asyncio.wait_for(modbus.endpoint.listening.wait(), 5)
            assert await client.connect()
            await agree(lambda view: view["charge_current"] == 100.0)
            hub.publish(make_snapshot("a", alarms=frozenset({Alarm.CELL_OVERVOLTAGE}), charge_enabled=False))
            view = await agree(lambda view: view["overvoltage"])
            assert view["charge_current"] == 0.0
    finally:
        client.close()
        simulator.close()


async def test_swap_a_profile_and_a_map_under_running_sinks() -> None:
    hub = SnapshotHub()
    hub.register("a", stale_after=60.0)
    hub.publish(make_snapshot("a"))
    controller = InverterController(InverterSettings(batteries=("a",), refresh_interval=0.05))
    channel = channel_name()
    can = CanSink(CanSettings(interface="virtual", channel=channel, period=0.05), controller)
    settings = ModbusSettings(mode="tcp", port=free_port())
    modbus = ModbusSink(settings, controller)
    sma = load_profile("sma")
    client = AsyncModbusTcpClient("127.0.0.1", port=settings.port, timeout=1, retries=0, reconnect_delay=0)
    try:
        async with running(hub, controller, can, modbus):
            assert isinstance(modbus.endpoint, ModbusTcpServer)
            await asyncio.wait_for(modbus.endpoint.listening.wait(), 5)
            assert await client.connect()
            await wait_for(lambda: can.frame_sets >= 2)
            server = modbus.endpoint

            # CAN: the next frame set uses the new profile; the bus stays open (no failure, no reopen).
            with pytest.raises(ConfigError, match="CAN profile"):
                can.swap_item(load_register_map("generic"))
            previous = can.swap_item(sma)
            assert isinstance(previous, CanProfile) and previous.name == "pylon"
            assert can.profile.name == "sma"
            sets = can.frame_sets
            await wait_for(lambda: can.frame_sets >= sets + 2)
            assert {frame.arbitration_id for frame in can.last_sent} == set(sma.frame_ids)
            assert set(sma.frame_ids) != set(previous.frame_ids)
            assert can.bus_failures == 0

            # Modbus: the same server answers from the new map's registers.
            assert (await client.read_holding_registers(0x0100, count=1, slave=1)).registers == [50]
            with pytest.raises(ConfigError, match="register map"):
                modbus.swap_item(sma)
            fronius = load_register_map("byd-hvm-fronius")
            previous_map = modbus.swap_item(fronius)
            assert isinstance(previous_map, RegisterMap) and previous_map.name == "generic"
            response = await client.read_holding_registers(300, count=4, slave=1)
            assert not response.isError()
            assert response.registers[3] == 5000  # SoC 50.00 % in the Fronius map's layout
            assert (await client.read_holding_registers(0x0100, count=1, slave=1)).isError()
            assert modbus.endpoint is server and client.connected
            assert modbus.swap_item(previous_map) is fronius
            assert (await client.read_holding_registers(0x0100, count=1, slave=1)).registers == [50]
    finally:
        client.close()
