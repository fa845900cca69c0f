"""The inverter outputs encode the controller's newest status when it is read or sent, never an older one.

Modbus registers and the CAN frame set are encoded lazily (a bank of eight packs brings eight statuses a
second); these tests pin that a read always sees the newest status, that an aged status still turns
into the safe image at the read, and that the limit engine's per-pack cache never hides a change.
"""

from __future__ import annotations

from bmsgate.inverter.bank import PackInput, aggregate
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.sink import CanSink
from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.limits import LimitEngine, LimitSettings
from bmsgate.inverter.modbus.registermap import RegisterKind
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.sink import ModbusSink
from bmsgate.inverter.settings import InverterSettings
from bmsgate.model import Alarm
from bmsgate.runtime.hub import SnapshotHub

from .can.helpers import channel_name, make_snapshot
from .modbus.helpers import FakeClock, free_port

CCL, STATUS = 0x0105, 0x0108
STALE_STATUS = 4


def _setup() -> tuple[FakeClock, SnapshotHub, InverterController, ModbusSink, CanSink]:
    clock = FakeClock()
    hub = SnapshotHub(clock=clock)
    hub.register("a", stale_after=10.0)
    controller = InverterController(InverterSettings(batteries=("a",)), clock=clock)
    modbus = ModbusSink(ModbusSettings(mode="tcp", port=free_port()), controller)
    can = CanSink(CanSettings(interface="virtual", channel=channel_name()), controller)
    return clock, hub, controller, modbus, can


def test_a_register_read_encodes_the_newest_status_without_a_refresh() -> None:
    clock, hub, controller, modbus, _can = _setup()
    hub.publish(make_snapshot("a"))
    controller.refresh(hub, fresh_data=True)
    modbus._take_status()  # what the sink's status task does on every new status
    assert modbus.store.read(RegisterKind.HOLDING, CCL)[0] > 0
    assert modbus.status is controller.status

    # A protection: the next status zeroes the charge limit, and the very next read shows it.
    clock.advance(1.0)
    hub.publish(make_snapshot("a", alarms=frozenset({Alarm.CELL_OVERVOLTAGE}), charge_enabled=False))
    controller.refresh(hub, fresh_data=True)
    modbus._take_status()
    assert modbus.store.read(RegisterKind.HOLDING, CCL) == [0]


def test_a_status_that_aged_is_presented_stale_at_the_read() -> None:
    clock, hub, controller, modbus, _can = _setup()
    hub.publish(make_snapshot("a"))
    controller.refresh(hub, fresh_data=True)
    modbus._take_status()
    assert modbus.store.read(RegisterKind.HOLDING, STATUS) != [STALE_STATUS]
    # The controller stops; the output's own timer marks the image due, and the read judges the age.
    clock.advance(controller.settings.status_timeout + 1.0)
    modbus._take_status()
    assert modbus.store.read(RegisterKind.HOLDING, STATUS) == [STALE_STATUS]
    assert modbus.store.read(RegisterKind.HOLDING, CCL) == [0]


def test_can_frames_read_after_a_status_encode_that_status() -> None:
    clock, hub, controller, _modbus, can = _setup()
    hub.publish(make_snapshot("a"))
    controller.refresh(hub, fresh_data=True)
    can.refresh()
    before = {frame.arbitration_id: frame.data for frame in can.frames}
    clock.advance(1.0)
    hub.publish(make_snapshot("a", alarms=frozenset({Alarm.CELL_OVERVOLTAGE}), charge_enabled=False))
    controller.refresh(hub, fresh_data=True)
    can._take_status()  # the status task: no frames encoded yet ...
    assert can._less_safe_than_sent() or can.frames  # ... the urgency check reads the status, not frames
    after = {frame.arbitration_id: frame.data for frame in can.frames}
    assert after[0x351] != before[0x351]  # charge current limit now 0
    assert after[0x359] != before[0x359]  # over-voltage protection bit


def test_limit_targets_follow_every_new_snapshot_and_keep_a_stale_packs_last() -> None:
    settings = LimitSettings(max_charge_current=100)
    cached, fresh = LimitEngine(settings), LimitEngine(settings)
    a, b = make_snapshot("a"), make_snapshot("b")
    now = 0.0
    for step in range(6):
        now += 1.0
        if step == 2:
            b = make_snapshot("b", cell_voltages=(3.55,) * 16)  # high cells taper the charge limit
        if step == 4:
            a = make_snapshot("a", charge_enabled=False)
        packs = [PackInput("a", a, stale=False, age=0.1), PackInput("b", b, stale=step == 5, age=0.1)]
        bank = aggregate(packs)
        first = cached.update(bank, now)
        # A new engine each time computes every pack afresh: the cached engine must agree on the targets.
        reference = LimitEngine(settings)
        expected = reference._pack_targets((*bank.online, *bank.offline))
        assert cached._pack_targets((*bank.online, *bank.offline)) == expected
        assert first.stale == fresh.update(bank, now).stale
    assert first.charge_current == 0.0  # a pack's charge FET off
