"""Supervisor.apply: live changes take effect at the right boundary, revert, and go unnoticed by the rest."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Awaitable, Callable

import pytest

from bmsgate.errors import AuthenticationError, ConfigError
from bmsgate.model import BatterySnapshot
from bmsgate.protocols import CompiledProtocol, get_protocol
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.hub import HubUpdate, SnapshotHub, Subscription
from bmsgate.runtime.simulation import PackConfig
from bmsgate.runtime.supervisor import (
    AddBattery,
    BatteryRuntime,
    LiveSwappable,
    RemoveBattery,
    ReplaceOutputItem,
    ReplaceProtocol,
    Supervisor,
)
from bmsgate.transports.simulator import FaultPlan, SimulatorTransport

JBD = get_protocol("jbd")
# Same bytes on the wire, another name: every snapshot says which definition decoded it.
JBD_B = CompiledProtocol(JBD.definition.model_copy(update={"name": "jbd-live-b"}))
# Generous timeouts: the machine running the tests is shared; a timeout here would be a false alarm.
OPTIONS = ClientOptions(request_timeout=1.0, retries=0, poll_deadline=3.0)


def runtime(battery_id: str, *, interval: float = 0.02, faults: FaultPlan | None = None) -> BatteryRuntime:
    transport = SimulatorTransport(JBD, PackConfig(cells=4), faults=faults, battery_id=battery_id)
    client = BatteryClient(JBD, transport, battery_id=battery_id, options=OPTIONS)
    return BatteryRuntime(battery_id, battery_id, client, poll_interval=interval, stale_after=5.0)


class RecordingHub(SnapshotHub):
    """Records every snapshot the pollers publish (in order, with the loop time)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[float, BatterySnapshot]] = []
        self.events: list[tuple[str, str]] = []
        """``("snapshot", protocol)`` of the changed battery, and the test's ``("swapping"|"swapped", protocol)``."""

    def publish(self, snapshot: BatterySnapshot) -> None:
        self.published.append((asyncio.get_running_loop().time(), snapshot))
        if snapshot.battery_id == "changed":
            self.events.append(("snapshot", snapshot.protocol))
        super().publish(snapshot)

    def of(self, battery_id: str) -> list[BatterySnapshot]:
        return [snapshot for _, snapshot in self.published if snapshot.battery_id == battery_id]


class RecordingSink:
    """Keeps every update it receives."""

    name = "recording"

    def __init__(self) -> None:
        self.updates: list[HubUpdate] = []
        self.subscription: Subscription | None = None

    async def run(self, hub: SnapshotHub) -> None:
        self.subscription = hub.subscribe(self.name)
        async for update in self.subscription:
            self.updates.append(update)

    def drain(self) -> None:
        """Take what was published but not read yet when the run ended."""
        assert self.subscription is not None
        while (update := self.subscription.get_nowait()) is not None:
            self.updates.append(update)

    def snapshots(self, battery_id: str) -> list[BatterySnapshot]:
        return [u.snapshot for u in self.updates if u.battery_id == battery_id and u.snapshot is not None]


@dataclasses.dataclass(frozen=True)
class RegisterMap:
    name: str


class SwappableSink:
    """An output with a live-swappable item, like the Modbus and CAN sinks."""

    name = "swappable"

    def __init__(self) -> None:
        self.item = RegisterMap("map-a")

    def swap_item(self, item: object) -> object:
        if not isinstance(item, RegisterMap):
            raise ConfigError(f"a register map, not {type(item).__name__}", key_path=f"outputs.{self.name}")
        previous, self.item = self.item, item
        return previous

    async def run(self, hub: SnapshotHub) -> None:
        await asyncio.Event().wait()


class PlainSink:
    name = "plain"

    async def run(self, hub: SnapshotHub) -> None:
        await asyncio.Event().wait()


async def run_with(supervisor: Supervisor, scenario: Callable[[], Awaitable[None]]) -> None:
    """Run `supervisor` while `scenario` runs, then stop it."""
    running = asyncio.create_task(supervisor.run())
    try:
        async with asyncio.timeout(30):
            while supervisor.hub.latest(next(iter(supervisor.batteries))) is None:
                await asyncio.sleep(0.01)
            await scenario()
    finally:
        supervisor.request_stop()
        async with asyncio.timeout(2.0):
            await running


async def next_snapshot(hub: RecordingHub, battery_id: str, *, count: int = 1) -> BatterySnapshot:
    """Wait until `battery_id` published `count` more snapshots; the last of them."""
    target = len(hub.of(battery_id)) + count
    async with asyncio.timeout(5.0):
        while len(hub.of(battery_id)) < target:
            await asyncio.sleep(0.005)
    return hub.of(battery_id)[-1]


def poll_tasks() -> set[str]:
    return {task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("poll-") and not task.done()}


async def test_changes_under_load_reach_only_the_changed_battery(caplog: pytest.LogCaptureFixture) -> None:
    hub = RecordingHub()
    steady = [runtime(f"steady{index}") for index in range(4)]
    changed = runtime("changed")
    sink = RecordingSink()
    supervisor = Supervisor([*steady, changed], [sink], hub=hub)
    applied = 0

    async def apply(
        change: AddBattery | RemoveBattery | ReplaceProtocol,
    ) -> AddBattery | RemoveBattery | ReplaceProtocol:
        nonlocal applied
        if isinstance(change, ReplaceProtocol):
            hub.events.append(("swapping", change.protocol.name))
        inverse = await supervisor.apply(change)
        if isinstance(change, ReplaceProtocol):
            hub.events.append(("swapped", change.protocol.name))
        applied += 1
        assert isinstance(inverse, AddBattery | RemoveBattery | ReplaceProtocol)
        return inverse

    async def scenario() -> None:
        extra = runtime("extra")
        for _ in range(4):
            revert_protocol = await apply(ReplaceProtocol("changed", JBD_B))
            assert revert_protocol == ReplaceProtocol("changed", JBD)
            assert supervisor.batteries["changed"].client.protocol is JBD_B
            assert (await next_snapshot(hub, "changed")).protocol == "jbd-live-b"

            remove_extra = await apply(AddBattery(extra))
            assert remove_extra == RemoveBattery("extra")
            assert "poll-extra" in poll_tasks()
            await next_snapshot(hub, "extra")

            add_extra = await apply(remove_extra)
            assert isinstance(add_extra, AddBattery) and add_extra.runtime is extra
            assert "poll-extra" not in poll_tasks()
            assert not extra.client.transport.is_open
            assert "extra" not in hub.battery_ids()
            assert supervisor.link_stats("extra") is None

            await asyncio.sleep(0.1)  # the others keep polling meanwhile
            assert await apply(revert_protocol) == ReplaceProtocol("changed", JBD_B)
            assert (await next_snapshot(hub, "changed")).protocol == "jbd"

    with caplog.at_level(logging.INFO, logger="bmsgate.runtime.supervisor"):
        await run_with(supervisor, scenario)
    sink.drain()

    # The steady batteries never noticed: every poll succeeded, none stalled, and the sink saw
    # exactly the snapshots that were polled, each once, in order.
    for battery in steady:
        stats = battery.client.stats
        published = hub.of(battery.battery_id)
        assert stats.failures == 0
        assert stats.polls == len(published) >= 20
        times = [at for at, snapshot in hub.published if snapshot.battery_id == battery.battery_id]
        assert max(b - a for a, b in itertools.pairwise(times)) < 1.0
        received = sink.snapshots(battery.battery_id)
        assert [s.timestamp for s in received] == [s.timestamp for s in published]
        assert len({s.timestamp for s in received}) == len(received)
        assert not any(u.removed for u in sink.updates if u.battery_id == battery.battery_id)

    # The changed battery: before each swap the old definition, after it the new one, never mixed.
    current, installing, switched = "jbd", None, False
    for kind, protocol in hub.events:
        if kind == "swapping":
            installing, switched = protocol, False
        elif kind == "swapped":
            current, installing = protocol, None
        elif installing is None:
            assert protocol == current
        elif protocol == installing:
            switched = True
        else:
            assert protocol == current and not switched, "an old-definition snapshot after the swap"
    assert sum(kind == "swapped" for kind, _ in hub.events) == 8
    changed_stats = changed.client.stats
    assert changed_stats is supervisor.link_stats("changed")  # carried over through every swap
    assert changed_stats.failures == 0
    assert changed_stats.polls == len(hub.of("changed"))

    # The removed battery: the outputs were told it is gone, and got nothing from it afterwards.
    extra_updates = [u for u in sink.updates if u.battery_id == "extra"]
    assert sum(u.removed for u in extra_updates) == 4
    assert extra_updates[-1].removed

    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "(live" in r.getMessage()]
    assert len(messages) == applied == 16


async def test_a_protocol_swap_waits_for_the_poll_in_progress() -> None:
    hub = RecordingHub()
    # Every reply is 0.15 s late: a poll (three requests) takes about half a second.
    slow = runtime("slow", interval=0.01, faults=FaultPlan(delay=1.0, delay_seconds=0.15))
    supervisor = Supervisor([slow], [], hub=hub)
    transport = slow.client.transport
    assert isinstance(transport, SimulatorTransport)

    async def scenario() -> None:
        writes = transport.write_count
        async with asyncio.timeout(5):
            while transport.write_count == writes:  # a poll has just begun
                await asyncio.sleep(0.001)
        published = len(hub.published)
        await supervisor.apply(ReplaceProtocol("slow", JBD_B))
        # The poll in progress ended (with the old definition) before the swap, and did not fail.
        assert len(hub.published) == published + 1
        assert hub.published[-1][1].protocol == "jbd"
        assert slow.client.stats.failures == 0
        assert (await next_snapshot(hub, "slow")).protocol == "jbd-live-b"

    await run_with(supervisor, scenario)
    assert slow.client.stats.failures == 0


async def test_output_item_swap_and_its_revert() -> None:
    swappable = SwappableSink()
    supervisor = Supervisor([runtime("pack")], [swappable, PlainSink()])

    async def scenario() -> None:
        assert isinstance(swappable, LiveSwappable)
        inverse = await supervisor.apply(ReplaceOutputItem("swappable", RegisterMap("map-b")))
        assert swappable.item == RegisterMap("map-b")
        assert inverse == ReplaceOutputItem("swappable", RegisterMap("map-a"))
        await supervisor.apply(inverse)
        assert swappable.item == RegisterMap("map-a")
        with pytest.raises(ConfigError, match="register map"):
            await supervisor.apply(ReplaceOutputItem("swappable", "not a map"))
        assert swappable.item == RegisterMap("map-a")
        with pytest.raises(ConfigError, match=r"outputs\.plain: output 'plain' cannot swap"):
            await supervisor.apply(ReplaceOutputItem("plain", RegisterMap("map-b")))
        with pytest.raises(ConfigError, match="no output 'missing'"):
            await supervisor.apply(ReplaceOutputItem("missing", RegisterMap("map-b")))

    await run_with(supervisor, scenario)


async def test_invalid_changes_are_refused_without_side_effects() -> None:
    pack = runtime("pack")
    supervisor = Supervisor([pack], [])
    with pytest.raises(RuntimeError, match="not running"):
        await supervisor.apply(ReplaceProtocol("pack", JBD_B))
    assert pack.client.protocol is JBD

    async def scenario() -> None:
        tasks = poll_tasks()
        with pytest.raises(ConfigError, match="no battery 'ghost'"):
            await supervisor.apply(ReplaceProtocol("ghost", JBD_B))
        with pytest.raises(ConfigError, match="no battery 'ghost'"):
            await supervisor.apply(RemoveBattery("ghost"))
        duplicate = runtime("pack")
        with pytest.raises(ConfigError, match="'pack' is running already"):
            await supervisor.apply(AddBattery(duplicate))
        assert supervisor.batteries["pack"] is pack
        assert pack.client.protocol is JBD
        assert poll_tasks() == tasks
        assert not duplicate.client.transport.is_open

    await run_with(supervisor, scenario)
    with pytest.raises(RuntimeError, match="not running"):
        await supervisor.apply(RemoveBattery("pack"))
    assert "pack" in supervisor.batteries


async def test_changes_are_applied_one_at_a_time() -> None:
    hub = RecordingHub()
    supervisor = Supervisor([runtime("a"), runtime("b")], [], hub=hub)

    async def scenario() -> None:
        extras = [runtime(f"extra{index}") for index in range(5)]
        inverses = await asyncio.gather(*(supervisor.apply(AddBattery(extra)) for extra in extras))
        assert {f"poll-extra{index}" for index in range(5)} <= poll_tasks()
        await asyncio.gather(*(supervisor.apply(inverse) for inverse in inverses))
        assert not {f"poll-extra{index}" for index in range(5)} & poll_tasks()
        assert set(supervisor.batteries) == {"a", "b"}

    await run_with(supervisor, scenario)


async def test_a_new_protocol_restarts_a_battery_that_gave_up(monkeypatch: pytest.MonkeyPatch) -> None:
    pack = runtime("pack")
    supervisor = Supervisor([pack, runtime("other")], [])
    hub = supervisor.hub

    async def refuse(self: BatteryClient) -> BatterySnapshot:
        raise AuthenticationError("wrong PIN", battery_id="pack")

    async def scenario() -> None:
        monkeypatch.setattr(pack.client, "read", refuse.__get__(pack.client))
        async with asyncio.timeout(5):
            while "poll-pack" in poll_tasks():
                await asyncio.sleep(0.01)
        assert pack.available is False
        before = hub.latest("pack")
        await supervisor.apply(ReplaceProtocol("pack", JBD_B))  # a fresh client: reads normally again
        assert "poll-pack" in poll_tasks()
        async with asyncio.timeout(5):
            while (latest := hub.latest("pack")) is before or latest is None:
                await asyncio.sleep(0.01)
        assert latest.protocol == "jbd-live-b"
        assert pack.available is True

    await run_with(supervisor, scenario)


async def test_control_of_a_removed_battery_is_refused() -> None:
    supervisor = Supervisor([runtime("pack"), runtime("gone")], [])

    async def scenario() -> None:
        await supervisor.apply(RemoveBattery("gone"))
        with pytest.raises(Exception, match="no such battery"):
            await supervisor.set_mosfets("gone", discharge=False)
        snapshot = await supervisor.set_mosfets("pack", discharge=False)
        assert snapshot.discharge_enabled is False

    await run_with(supervisor, scenario)


async def test_a_definition_swapped_in_that_uses_the_secret_otherwise_fails_that_battery_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The login moved (the secret now goes elsewhere in the frame): a pushed pack must not get the PIN this way.
    configured = get_protocol("x123smart").definition
    assert configured.keep_alive is not None  # its warm-up is left out: this test is about the swap
    x123 = CompiledProtocol(
        configured.model_copy(update={"keep_alive": configured.keep_alive.model_copy(update={"warm_up": 0})})
    )
    login, *rest = x123.definition.requests
    assert login.secret is not None
    moved = login.model_copy(update={"secret": login.secret.model_copy(update={"at": 1})})
    other_use = CompiledProtocol(x123.definition.model_copy(update={"requests": [moved, *rest]}))
    transport = SimulatorTransport(x123, PackConfig(cells=4), battery_id="boat")
    options = dataclasses.replace(OPTIONS, secret=b"1234")
    boat = BatteryRuntime(
        "boat", "boat", BatteryClient(x123, transport, battery_id="boat", options=options), 0.05, stale_after=5.0
    )
    supervisor = Supervisor([boat, runtime("other")], [])

    async def until_available() -> None:
        async with asyncio.timeout(5):
            while boat.available is not True:
                await asyncio.sleep(0.01)

    async def scenario() -> None:
        await until_available()
        logins = sum(b"1234" in data for data in transport.writes)
        with caplog.at_level(logging.ERROR, logger="bmsgate.runtime.supervisor"):
            await supervisor.apply(ReplaceProtocol("boat", other_use))
            async with asyncio.timeout(5):
                while "poll-boat" in poll_tasks():
                    await asyncio.sleep(0.01)
        assert boat.available is False
        (record,) = [record for record in caplog.records if "boat" in record.message]
        assert "restart the gateway" in record.message and "1234" not in record.message
        assert sum(b"1234" in data for data in transport.writes) == logins  # the PIN was not sent again
        assert supervisor.batteries["other"].available is True
        # Putting the configured definition back is accepted at once.
        await supervisor.apply(ReplaceProtocol("boat", x123))
        await until_available()

    await run_with(supervisor, scenario)
