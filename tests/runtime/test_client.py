"""BatteryClient over the simulated BMS, including every injected fault."""

from __future__ import annotations

import asyncio

import pytest

from bmsgate.errors import CommandRefused, ConnectError, DeviceTimeout, FrameError
from bmsgate.model import Alarm
from bmsgate.protocols import get_protocol
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import PackConfig
from bmsgate.transports.simulator import FaultPlan, SimulatorTransport

JBD = get_protocol("jbd")
FAST = ClientOptions(request_timeout=0.2, retries=2, retry_backoff=0.01, poll_deadline=3.0, confirm_timeout=0.3)


def _client(faults: FaultPlan | None = None, **pack: object) -> tuple[BatteryClient, SimulatorTransport]:
    transport = SimulatorTransport(JBD, PackConfig(**pack), faults=faults)  # type: ignore[arg-type]
    return BatteryClient(JBD, transport, battery_id="house", options=FAST), transport


async def test_one_poll_reads_the_whole_pack() -> None:
    client, transport = _client(cells=8, ntc_count=3, capacity=280)
    async with client:
        snapshot = await client.read()
    assert snapshot.battery_id == "house"
    assert snapshot.protocol == "jbd"
    assert snapshot.cell_count == 8
    assert len(snapshot.temperatures) == 3
    assert snapshot.full_capacity == pytest.approx(280)
    assert snapshot.device.model == "SIM-8S280"
    assert list(transport.writes)[:3] == [request.frame for request in JBD.requests]
    assert client.stats.success_rate == 1.0
    assert client.stats.rssi is not None


async def test_device_info_is_requested_once_per_connection() -> None:
    client, transport = _client()
    async with client:
        first = await client.read()
        second = await client.read()
    assert first.device.model == second.device.model
    hardware_request = JBD.requests[2].frame
    assert transport.writes.count(hardware_request) == 1


async def test_read_dict_is_the_documented_json_form() -> None:
    client, _ = _client(cells=4)
    async with client:
        data = await client.read_dict()
    assert data["battery_id"] == "house"
    assert len(data["cell_voltages"]) == 4
    assert isinstance(data["alarms"], list)


async def test_dropped_replies_are_retried() -> None:
    faults = FaultPlan(drop_next=2)
    client, transport = _client(faults)
    async with client:
        await client.read()
    assert client.stats.success_rate == 1.0
    assert transport.writes.count(JBD.requests[0].frame) == 3  # two lost, the third answered


async def test_corrupt_checksums_fail_with_a_frame_error_and_are_counted() -> None:
    client, _ = _client(FaultPlan(corrupt_checksum=1.0))
    async with client:
        with pytest.raises(FrameError, match="only corrupt replies"):
            await client.read()
    assert client.stats.failures == 1
    assert client.stats.frames_rejected >= 3
    assert client.stats.last_error is not None and "corrupt" in client.stats.last_error


async def test_truncated_replies_time_out() -> None:
    client, _ = _client(FaultPlan(truncate=1.0))
    async with client:
        with pytest.raises((DeviceTimeout, FrameError)):
            await client.read()


async def test_noise_is_filtered() -> None:
    client, _ = _client(FaultPlan(noise=1.0))
    async with client:
        snapshot = await client.read()
    assert snapshot.cell_count == 16


async def test_silent_bms_times_out() -> None:
    client, _ = _client(FaultPlan(silent=True))
    async with client:
        with pytest.raises(DeviceTimeout):
            await client.read()
    assert client.stats.success_rate == 0.0


async def test_late_reply_beyond_the_deadline() -> None:
    options = ClientOptions(request_timeout=0.1, retries=0, poll_deadline=0.5)
    transport = SimulatorTransport(JBD, PackConfig(), faults=FaultPlan(delay=1.0, delay_seconds=0.3))
    async with BatteryClient(JBD, transport, options=options) as client:
        with pytest.raises(DeviceTimeout):
            await client.read()


async def test_refused_connection() -> None:
    client, _ = _client(FaultPlan(refuse_connect=1.0))
    with pytest.raises(ConnectError, match="refused"):
        await client.read()


async def test_link_drop_mid_frame_then_reconnect() -> None:
    faults = FaultPlan(disconnect_mid_frame=1.0)
    client, transport = _client(faults)
    async with client:
        with pytest.raises(ConnectError):
            await client.read()
        assert not transport.is_open
        faults.disconnect_mid_frame = 0.0
        snapshot = await client.read()
    assert snapshot.cell_count == 16
    assert transport.connects == 2


async def test_connect_per_poll_closes_after_each_read() -> None:
    transport = SimulatorTransport(JBD, PackConfig())
    options = ClientOptions(connection="per_poll", request_timeout=0.2)
    client = BatteryClient(JBD, transport, options=options)
    async with client:
        await client.read()
        assert not transport.is_open
        await client.read()
    assert transport.connects == 2


async def test_mosfet_sensor_option_moves_ntc1() -> None:
    transport = SimulatorTransport(JBD, PackConfig(ntc_count=3))
    options = ClientOptions(mosfet_sensor="ntc1", request_timeout=0.2)
    async with BatteryClient(JBD, transport, options=options) as client:
        snapshot = await client.read()
    assert len(snapshot.temperatures) == 2
    assert snapshot.mosfet_temperature is not None


async def test_mosfet_control_round_trip_is_confirmed() -> None:
    client, transport = _client()
    async with client:
        await client.read()
        snapshot = await client.set_mosfets(charge=False)
        assert snapshot.charge_enabled is False
        assert snapshot.discharge_enabled is True
        assert JBD.build_command("set_mosfets", charge=False, discharge=True) in transport.writes
        snapshot = await client.set_mosfets(charge=True, discharge=False)
        assert (snapshot.charge_enabled, snapshot.discharge_enabled) == (True, False)


async def test_unconfirmed_mosfet_command_is_reported() -> None:
    client, transport = _client()
    async with client:
        await client.read()
        # A protection holds the charge FET off: the command is acknowledged but has no effect.
        transport.pack.alarms.add(Alarm.CELL_OVERVOLTAGE)
        transport.pack.cell_offsets[0] = 50.0
        with pytest.raises(CommandRefused, match="did not switch the charge MOSFET"):
            await client.set_mosfets(charge=True, discharge=True)


async def test_unacknowledged_mosfet_command_is_refused() -> None:
    faults = FaultPlan()
    client, _ = _client(faults)
    async with client:
        await client.read()
        faults.silent = True
        with pytest.raises(CommandRefused, match="no acknowledgement"):
            await client.set_mosfets(charge=False)


async def test_streamed_replies_are_the_newest_not_the_oldest_queued() -> None:
    # JK streams cell info about once a second; polled less often, frames queue up between polls.
    # A poll must answer with the newest one, never with a frame that was already old.
    jk = get_protocol("jk")
    transport = SimulatorTransport(jk, PackConfig(cells=8, current_amplitude=0.0))
    transport.bms.stream_interval = 0.05
    options = ClientOptions(request_timeout=0.5, retries=0)
    async with BatteryClient(jk, transport, options=options) as client:
        before = await client.read()
        await asyncio.sleep(0.3)  # several frames queue up with the old cell voltage...
        transport.pack.cell_offsets[0] += 30.0  # ...then cell 1 jumps
        await asyncio.sleep(0.3)  # and several more frames carry the new value
        after = await client.read()
    assert after.cell_voltages[0] > before.cell_voltages[0] + 0.01
    assert after.cell_max is not None and after.cell_max.cell == 1
