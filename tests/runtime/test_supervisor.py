"""Supervisor: isolation of failures, backoff, logging once, staleness, control, clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from bmsgate.errors import AuthenticationError
from bmsgate.protocols import CompiledProtocol, get_protocol
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.runtime.simulation import SIMULATED_SECRET, PackConfig
from bmsgate.runtime.slots import ConnectionSlots
from bmsgate.runtime.supervisor import BatteryRuntime, Supervisor
from bmsgate.transports.simulator import FaultPlan, SimulatorTransport

JBD = get_protocol("jbd")
_X123 = get_protocol("x123smart")
assert _X123.definition.keep_alive is not None
# Without its 1.5 s warm-up: these tests are about what happens between polls, not before the login.
X123_NOW = CompiledProtocol(
    _X123.definition.model_copy(update={"keep_alive": _X123.definition.keep_alive.model_copy(update={"warm_up": 0})})
)
OPTIONS = ClientOptions(request_timeout=0.1, retries=0, poll_deadline=1.0)


def _battery(battery_id: str, faults: FaultPlan | None = None, interval: float = 0.05) -> BatteryRuntime:
    transport = SimulatorTransport(JBD, PackConfig(cells=4), faults=faults, battery_id=battery_id)
    client = BatteryClient(JBD, transport, battery_id=battery_id, options=OPTIONS)
    return BatteryRuntime(battery_id, battery_id, client, poll_interval=interval, stale_after=0.4)


class FailingSink:
    name = "failing"

    def __init__(self) -> None:
        self.starts = 0

    async def run(self, hub: SnapshotHub) -> None:
        self.starts += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("broker exploded")


class CountingSink:
    name = "counting"

    def __init__(self) -> None:
        self.updates = 0
        self.stale_updates = 0

    async def run(self, hub: SnapshotHub) -> None:
        async for update in hub.subscribe(self.name):
            self.updates += 1
            self.stale_updates += update.stale


class FailsWhileStoppingSink:
    """An output whose clean-up raises when it is cancelled (a temporary directory still being written)."""

    name = "fails-while-stopping"

    def __init__(self) -> None:
        self.starts = 0

    async def run(self, hub: SnapshotHub) -> None:
        self.starts += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise OSError(39, "Directory not empty") from None


async def test_an_output_failing_while_it_stops_is_not_restarted() -> None:
    sink = FailsWhileStoppingSink()
    supervisor = Supervisor([_battery("good")], [sink], sink_backoff=0.01)
    started = time.monotonic()
    await asyncio.wait_for(supervisor.run(duration=0.5), timeout=10)
    assert time.monotonic() - started < 3
    assert sink.starts == 1


async def test_one_failing_battery_and_sink_do_not_disturb_the_others(caplog: pytest.LogCaptureFixture) -> None:
    good = _battery("good")
    bad = _battery("bad", FaultPlan(silent=True))
    failing, counting = FailingSink(), CountingSink()
    supervisor = Supervisor([good, bad], [failing, counting], max_backoff=0.2, sink_backoff=0.1)
    with caplog.at_level(logging.INFO):
        await supervisor.run(duration=1.0)
    assert good.client.stats.polls >= 10
    assert good.client.stats.success_rate == 1.0
    assert bad.client.stats.failures >= 2
    assert supervisor.hub.latest("good") is not None
    assert supervisor.hub.is_stale("bad")
    assert counting.updates >= 10
    assert failing.starts >= 2  # restarted after each failure, with backoff
    messages = [record.getMessage() for record in caplog.records]
    assert sum("bad: unavailable" in message for message in messages) == 1
    assert sum("output failing failed" in message for message in messages) == 1


async def test_backoff_grows_while_a_battery_fails() -> None:
    bad = _battery("bad", FaultPlan(silent=True), interval=0.05)
    supervisor = Supervisor([bad], [], max_backoff=10.0, jitter=0.0)
    await supervisor.run(duration=0.9)
    # Without backoff a 0.05 s interval would give ~6 failing polls (0.1 s timeout each);
    # doubling waits (0.05, 0.1, 0.2, 0.4...) allow only a few.
    assert 2 <= bad.client.stats.failures <= 4


async def test_unavailable_then_recovered_is_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    faults = FaultPlan(silent=True)
    battery = _battery("flaky", faults)
    supervisor = Supervisor([battery], [], max_backoff=0.1, jitter=0.0)

    async def heal() -> None:
        await asyncio.sleep(0.5)
        faults.silent = False

    with caplog.at_level(logging.INFO):
        async with asyncio.TaskGroup() as group:
            group.create_task(heal())
            group.create_task(supervisor.run(duration=1.2))
    messages = [record.getMessage() for record in caplog.records]
    assert sum("flaky: unavailable" in message for message in messages) == 1
    assert sum("flaky: available again" in message for message in messages) == 1
    assert battery.available is True


async def test_staleness_reaches_subscribers_and_recovers() -> None:
    faults = FaultPlan()
    battery = _battery("pack", faults)
    counting = CountingSink()
    supervisor = Supervisor([battery], [counting], max_backoff=0.1)

    async def break_then_heal() -> None:
        await asyncio.sleep(0.3)
        faults.silent = True
        await asyncio.sleep(1.0)
        assert supervisor.hub.is_stale("pack")
        faults.silent = False

    async with asyncio.TaskGroup() as group:
        group.create_task(break_then_heal())
        group.create_task(supervisor.run(duration=2.0))
    assert counting.stale_updates == 1
    assert not supervisor.hub.is_stale("pack")


async def test_control_through_the_supervisor_publishes_the_confirmed_state() -> None:
    battery = _battery("pack")
    supervisor = Supervisor([battery], [])
    snapshot = await supervisor.set_mosfets("pack", discharge=False)
    assert snapshot.discharge_enabled is False
    latest = supervisor.hub.latest("pack")
    assert latest is not None and latest.discharge_enabled is False


def test_sigterm_shuts_down_within_two_seconds() -> None:
    command = [
        sys.executable,
        "-m",
        "bmsgate.app.cli.main",
        "demo",
        "--plain",
        "--no-mqtt",
        "--no-modbus",
        "--fleet-sites",
        "2",
    ]
    with subprocess.Popen(
        [*command, "--poll-interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # wait until batteries are being read
                if "SoC" in process.stdout.readline():
                    break
            else:
                pytest.fail("the demo printed no battery line")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            # communicate, not wait: the demo goes on logging while it stops, and a pipe nobody reads fills up
            # and blocks it (that would measure the test, not the shutdown).
            process.communicate(timeout=5)
            elapsed = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0
    assert elapsed < 2.0


async def test_eight_batteries_share_three_connection_slots_fairly() -> None:
    open_now = 0
    peak = 0

    class CountingTransport(SimulatorTransport):
        async def _do_open(self) -> None:
            nonlocal open_now, peak
            await super()._do_open()
            open_now += 1
            peak = max(peak, open_now)

        async def _do_close(self) -> None:
            nonlocal open_now
            open_now -= 1
            await super()._do_close()

    slots = ConnectionSlots(3)
    options = ClientOptions(request_timeout=0.3, retries=0, connection="per_poll")
    batteries = []
    for index in range(8):
        transport = CountingTransport(JBD, PackConfig(cells=4), battery_id=f"b{index}", connect_delay=0.02)
        client = BatteryClient(JBD, transport, battery_id=f"b{index}", options=options)
        batteries.append(BatteryRuntime(f"b{index}", f"b{index}", client, 0.05, stale_after=5.0, slots=slots))
    supervisor = Supervisor(batteries, [])
    await supervisor.run(duration=1.5)
    polls = [battery.client.stats.polls for battery in batteries]
    assert peak == 3
    assert slots.peak_in_use == 3
    assert all(battery.client.stats.failures == 0 for battery in batteries)
    assert min(polls) >= 3
    assert max(polls) - min(polls) <= 2  # first come, first served: nobody starves or hogs


async def test_a_keep_alive_is_written_between_polls_while_the_link_is_kept() -> None:
    # 123\SmartBMS gen3 modules send nothing unless '$' keeps coming: the poller writes it while it waits.
    protocol = X123_NOW
    transport = SimulatorTransport(protocol, PackConfig(cells=4), battery_id="boat")
    options = ClientOptions(request_timeout=0.5, retries=0, poll_deadline=2.0, secret=SIMULATED_SECRET)
    client = BatteryClient(protocol, transport, battery_id="boat", options=options)
    battery = BatteryRuntime("boat", "boat", client, poll_interval=30.0, stale_after=60.0)
    await asyncio.wait_for(Supervisor([battery], []).run(duration=1.2), timeout=10)
    assert client.stats.polls == 1 and client.stats.failures == 0
    # One poll (well under a second) and then only waiting: about three keep-alives a second all along.
    assert transport.writes.count(b"$") >= 3


class _KeepAliveFailing(SimulatorTransport):
    """A 123\\SmartBMS link whose keep-alive writes start failing after a few (a BLE write refused, a bug)."""

    def __init__(self, error: Exception, *, ok_writes: int = 2) -> None:
        super().__init__(X123_NOW, PackConfig(cells=4), battery_id="boat")
        self.error = error
        self.ok_writes = ok_writes

    async def _do_write(self, data: bytes) -> None:
        if data == b"$":
            self.ok_writes -= 1
            if self.ok_writes < 0:
                raise self.error
        await super()._do_write(data)


@pytest.mark.parametrize(
    "error",
    [AuthenticationError("ATT insufficient authentication", battery_id="boat"), RuntimeError("a bug")],
    ids=["device-error", "bug"],
)
async def test_a_failing_keep_alive_between_polls_never_takes_the_other_batteries_down(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    # The keep-alive runs in the poller's task, outside a poll: what escaped it ended the whole TaskGroup.
    transport = _KeepAliveFailing(error)
    options = ClientOptions(request_timeout=0.5, retries=0, poll_deadline=2.0, secret=SIMULATED_SECRET)
    boat_client = BatteryClient(X123_NOW, transport, battery_id="boat", options=options)
    boat = BatteryRuntime("boat", "boat", boat_client, poll_interval=30.0, stale_after=60.0)
    house = _battery("house", interval=0.1)
    with caplog.at_level(logging.DEBUG, logger="bmsgate.runtime"):
        await asyncio.wait_for(Supervisor([boat, house], []).run(duration=1.5), timeout=10)
    assert house.client.stats.polls >= 5 and house.client.stats.failures == 0
    assert transport.ok_writes < 0  # the failure did happen
    if isinstance(error, AuthenticationError):
        # A device error closes the link; the next poll reconnects and reports it.
        assert any("keep-alive failed, closing the link" in record.message for record in caplog.records)
    else:
        unexpected = [record for record in caplog.records if "unexpected error between polls" in record.message]
        assert len(unexpected) == 1
