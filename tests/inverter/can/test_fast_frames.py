"""The fast frame encoding (frames reused, unread sources skipped, held names only) against the plain one.

Every built-in profile, with and without Victron's extra frames, runs through one sequence of inputs
(fresh and varying packs, repeats, alarms, missing measurements past the hold, another pack's cells,
requests, the safe phase with and without a last fresh bank, silence, clamped and huge values); each
frame set must be byte for byte the one tests/inverter/can/reference.py encodes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from bmsgate.catalog import Kind, default_catalog
from bmsgate.inverter.can.profiles import (
    FLAG_SOURCES,
    CanProfile,
    HeldMeasurements,
    OutputPhase,
    Requests,
    _cell_values,
    _extreme_ids,
    build_frames,
    hold_missing,
    load_profile,
    wire_values,
)
from bmsgate.inverter.status import InverterStatus
from bmsgate.model import Alarm

from .helpers import make_snapshot, make_status
from .reference import ReferenceEncoder, reference_cell_values, reference_extreme_ids, reference_hold_missing

PROFILES = default_catalog().names(Kind.CAN_PROFILE)

Step = tuple[InverterStatus, OutputPhase, Requests]


def _varied(rng: random.Random, packs: int, **changes: object) -> InverterStatus:
    snapshots = [
        make_snapshot(
            f"pack{index}",
            voltage=52.0 + rng.random(),
            current=rng.uniform(-40.0, 40.0),
            soc=rng.uniform(5.0, 99.0),
            cell_voltages=tuple(3.25 + rng.random() * 0.1 for _ in range(16)),
            temperatures=(20.0 + rng.random() * 5, 22.0 + rng.random()),
            **changes,
        )
        for index in range(packs)
    ]
    return make_status(*snapshots)


def _steps() -> Iterator[Step]:
    rng = random.Random(13)
    normal, none = OutputPhase.NORMAL, Requests()
    healthy = make_status()
    yield from ((healthy, normal, none) for _ in range(3))  # repeats: every frame reused
    for packs in (1, 4, 4, 8):
        yield _varied(rng, packs), normal, none
    for alarms in (
        {Alarm.CELL_OVERVOLTAGE},
        {Alarm.CHARGE_OVERTEMPERATURE, Alarm.CELL_IMBALANCE},
        {Alarm.SHORT_CIRCUIT, Alarm.INTERNAL_COMMUNICATION_FAULT, Alarm.SYSTEM_FAULT},
        set(Alarm),
        set(),
    ):
        yield make_status(make_snapshot(alarms=frozenset(alarms))), normal, none
    # Measurements missing: held by profiles without "invalid" markers, until the hold (3 sets) runs out.
    sparse = make_status(make_snapshot(temperatures=(), soh=None, cycles=None, remaining_capacity=None))
    yield from ((sparse, normal, none) for _ in range(5))
    yield healthy, normal, none
    # Another pack's cell layout carries the per-cell frames now.
    yield make_status(make_snapshot(cell_voltages=(3.2,) * 8)), normal, none
    yield make_status(make_snapshot(cell_voltages=())), normal, none
    low = make_status(make_snapshot(soc=3.0))
    for requests in (Requests(force_charge_1=True), Requests(force_charge_2=True, full_charge=True), none):
        yield low, normal, requests
    blocked = make_status(make_snapshot(charge_enabled=False), make_snapshot("b", discharge_enabled=False))
    yield blocked, normal, Requests(force_charge_1=True)
    stale = make_status(stale=True)
    yield from ((stale, OutputPhase.SAFE, none) for _ in range(3))
    yield make_status(_varied(rng, 1).bank.online[0], stale=True), OutputPhase.SAFE, none
    yield stale, OutputPhase.SILENT, none
    yield stale, OutputPhase.WAITING, none
    yield healthy, normal, none
    # Clamped values and a bank larger than any capacity signal.
    yield make_status(make_snapshot(current=-5000.0, voltage=900.0, soc=100.0)), normal, none
    huge = [make_snapshot(f"big{i}", full_capacity=3000.0, remaining_capacity=1500.0) for i in range(3)]
    yield make_status(*huge), normal, none
    yield from ((_varied(rng, 2), normal, none) for _ in range(10))


STEPS = list(_steps())


def _profiles(name: str) -> list[CanProfile]:
    base = load_profile(name)
    return [
        base,
        base.with_overrides(quirks={"victron_extras": not base.quirks.victron_extras}),
        base.with_overrides(manufacturer="BMSGATE", quirks={"soc_forcing": True}),
    ]


@pytest.mark.parametrize("name", PROFILES)
def test_every_frame_set_is_byte_identical_to_the_plain_encoding(name: str) -> None:
    profiles = _profiles(name)
    # The variants share their compiled frames: interleaving them checks a reused frame never leaks across.
    encoders = [ReferenceEncoder(profile) for profile in profiles]
    fast_held = [HeldMeasurements(limit=3) for _ in profiles]
    plain_held = [HeldMeasurements(limit=3) for _ in profiles]
    for number, (status, phase, requests) in enumerate(STEPS):
        for index, profile in enumerate(profiles):
            fast = build_frames(profile, status, phase, requests, held=fast_held[index])
            plain = encoders[index].frames(status, phase, requests, held=plain_held[index])
            assert [f.candump() for f in fast] == [f.candump() for f in plain], (name, index, number, phase)
            assert fast == plain
            assert fast_held[index].values == plain_held[index].values, (name, index, number)
            assert fast_held[index].misses == plain_held[index].misses, (name, index, number)


def test_the_sets_differ_from_step_to_step() -> None:
    # Otherwise the comparison above could pass on a frame reused when it should not have been.
    profile = load_profile("pylon")
    sets = {tuple(build_frames(profile, status, phase, requests)) for status, phase, requests in STEPS}
    assert len(sets) > 20


def test_each_source_keeps_its_type() -> None:
    # A frame is reused when its feed values compare equal; 1.0 == True, so a source must not change type.
    for name in PROFILES:
        profile = load_profile(name)
        for status, phase, requests in STEPS:
            for source, value in wire_values(profile, status, phase, requests).items():
                if source in FLAG_SOURCES:
                    assert isinstance(value, bool), (name, source, value)
                else:
                    assert value is None or type(value) is float, (name, source, value)


def test_a_frame_comes_back_when_its_values_return() -> None:
    profile = load_profile("pylon")
    first, second = make_status(make_snapshot(soc=40.0)), make_status(make_snapshot(soc=60.0))
    sets = [build_frames(profile, status, OutputPhase.NORMAL) for status in (first, first, second, first)]
    assert sets[0] == sets[1] == sets[3] != sets[2]
    assert sets[1][1] is sets[0][1]  # reused, not re-encoded
    assert sets[2][1] != sets[0][1]


def test_hold_missing_matches_the_plain_one_for_any_order_of_sources() -> None:
    rng = random.Random(5)
    names = ["soh", "temperature", "cycles", "cell_voltage_1", "cell_voltage_64", "cell_count", "soc", "charge_enable"]
    fast, plain = HeldMeasurements(limit=4), HeldMeasurements(limit=4)
    for _ in range(300):
        values: dict[str, float | bool | None] = {}
        for source in rng.sample(names, rng.randint(1, len(names))):
            values[source] = rng.choice([None, rng.random(), True, float(rng.choice((8, 16)))])
        copy = dict(values)
        hold_missing(values, fast)
        reference_hold_missing(copy, plain)
        assert values == copy
        assert fast.values == plain.values and fast.misses == plain.misses


def test_unread_costly_sources_are_computed_only_for_profiles_that_send_them() -> None:
    victron, pylon = load_profile("victron"), load_profile("pylon")
    growatt = load_profile("growatt-lv")
    assert victron.reads_extreme_ids and not pylon.reads_extreme_ids
    assert growatt.reads_cell_numbers and not pylon.reads_cell_numbers
    # The public values still carry every source, whatever the profile reads.
    values = wire_values(pylon, make_status(), OutputPhase.NORMAL, Requests())
    assert "min_voltage_id_0" in values and "cell_voltage_max_number" in values


def test_the_extremes_ids_and_cells_are_the_plain_ones() -> None:
    # wire_values itself (the plain path's source) was sped up: its id and cell sources against the old code.
    ties = make_status(make_snapshot("a", temperatures=(25.0, 25.0)), make_snapshot("b", temperatures=(25.0,)))
    for status in [ties, *(step[0] for step in STEPS)]:
        for bank in (status.bank, status.last_fresh):
            if bank is None:
                continue
            for safe in (False, True):
                assert _extreme_ids(bank, safe) == reference_extreme_ids(bank, safe)
            assert _cell_values(bank) == reference_cell_values(bank)
            assert list(_cell_values(bank)) == list(reference_cell_values(bank))
