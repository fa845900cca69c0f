"""The compiled state builder (StatePlan) against the row-by-row reference (build_state)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.homeassistant.discovery import encode_payload
from bmsgate.homeassistant.energy import EnergyTotals
from bmsgate.homeassistant.entities import (
    CommandResult,
    StateInputs,
    battery_entities,
    build_state,
    present_entities,
)
from bmsgate.homeassistant.settings import LinkStats
from bmsgate.homeassistant.sink import HomeAssistantSink
from bmsgate.homeassistant.state import StatePlan
from bmsgate.model import Alarm, BatterySnapshot
from bmsgate.runtime.hub import HubUpdate
from tests.homeassistant.conftest import BATTERY1, snapshot
from tests.homeassistant.conftest import settings as sink_settings
from tests.strategies import snapshots

_float = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6)
_energies = st.none() | st.builds(EnergyTotals, charged_kwh=_float, discharged_kwh=_float)
_links = st.none() | st.builds(
    LinkStats,
    success_rate=st.none() | st.floats(0.0, 1.0),
    rssi=st.none() | st.integers(-120, 0),
    last_error=st.none() | st.text(max_size=10),
)
_commands = st.none() | st.builds(
    CommandResult,
    command=st.sampled_from(["charge=on", "discharge=off"]),
    outcome=st.sampled_from(["confirmed", "refused", "unconfirmed"]),
    error=st.none() | st.text(max_size=10),
    timestamp=st.floats(0, 2e9),
)


def _reference(rows: object, inputs: StateInputs) -> str:
    # What the sink published before the plan: build_state row by row, json.dumps with these options.
    state = build_state(cast("list", rows), inputs)  # type: ignore[type-arg]
    return json.dumps(state, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)


@settings(max_examples=300, deadline=None)
@given(
    snapshot=snapshots,
    cells=st.integers(0, 32),
    temperatures=st.integers(0, 6),
    alarms=st.frozensets(st.sampled_from(Alarm)),
    control=st.booleans(),
    energy=_energies,
    link=_links,
    last_command=_commands,
)
def test_plan_payload_is_the_reference_payload(
    snapshot: BatterySnapshot,
    cells: int,
    temperatures: int,
    alarms: frozenset[Alarm],
    control: bool,
    energy: EnergyTotals | None,
    link: LinkStats | None,
    last_command: CommandResult | None,
) -> None:
    # Rows of a battery shape other than the snapshot's: cells and NTCs the snapshot lacks read as None.
    rows = battery_entities(cells=cells, temperatures=temperatures, alarms=alarms, control=control)
    inputs = StateInputs(snapshot, energy=energy, link=link, last_command=last_command, control=control)
    assert encode_payload(StatePlan(rows).build(inputs)) == _reference(rows, inputs)
    # And the rows the sink would announce for this snapshot.
    present = present_entities(inputs, alarms=alarms)
    assert encode_payload(StatePlan(present).build(inputs)) == _reference(present, inputs)


def test_plan_over_a_sequence_of_snapshots_with_gaps_alarms_and_many_cells() -> None:
    rows = battery_entities(cells=32, temperatures=4, control=True)
    plan = StatePlan(rows)
    for step in range(200):
        cells = tuple(3.2 + 0.0001 * ((step * 7 + n * 13) % 97) for n in range(32 - step % 5))
        snap = snapshot(
            timestamp=1000.0 + step,
            voltage=None if step % 7 == 0 else 52.123456 + step / 1000,
            current=float(step % 3) if step % 11 else None,
            soh=None if step % 2 else 97.55,
            cycles=step if step % 4 else None,
            cell_voltages=cells if step % 13 else (),
            temperatures=(20.123, math.nan, math.inf)[: step % 4],
            alarms=frozenset(list(Alarm)[: step % 6]),
            charge_enabled=None if step % 9 == 0 else step % 2 == 0,
            balancing_cells=None if step % 3 else (1, 5),
            heating=step % 5 == 0,
        )
        inputs = StateInputs(
            snap,
            energy=EnergyTotals(step * 0.012345, step * 0.054321) if step % 6 else None,
            link=LinkStats(success_rate=step % 10 / 10, rssi=-70, last_error=None) if step % 8 else None,
            last_command=CommandResult("charge=on", "confirmed", None, 1.5) if step > 100 else None,
            control=True,
        )
        assert encode_payload(plan.build(inputs)) == _reference(rows, inputs), step


class _RecordingSession:
    def __init__(self) -> None:
        self.payloads: dict[str, str] = {}

    async def publish(self, topic: str, payload: str, *, retain: bool, qos: int | None = None) -> None:
        del retain, qos
        self.payloads[topic] = payload


async def test_sink_compiles_the_plan_again_when_rows_are_added(tmp_path: Path) -> None:
    sink = HomeAssistantSink(sink_settings("mqtt://127.0.0.1:1", tmp_path), [BATTERY1])
    session = _RecordingSession()
    state_topic = sink._topics.battery_state("battery1")

    async def published_state(snap: BatterySnapshot) -> dict[str, object]:
        sink._apply(HubUpdate("battery1", snap, False, 0.0))
        await sink._flush(session)  # type: ignore[arg-type]
        state: dict[str, object] = json.loads(session.payloads[state_topic])
        return state

    first = await published_state(snapshot(timestamp=1.0, soh=None, cell_voltages=(3.3, 3.31)))
    assert "soh" not in first and "cell_03" not in first
    first_plan = sink._batteries["battery1"].plan
    assert first_plan is not None
    same = await published_state(snapshot(timestamp=2.0, soh=None, cell_voltages=(3.3, 3.32)))
    assert sink._batteries["battery1"].plan is first_plan  # nothing new to announce: compiled once
    assert same["cell_02"] == 3.32
    grown = await published_state(snapshot(timestamp=3.0, soh=97.0, cell_voltages=(3.3, 3.31, 3.33)))
    assert sink._batteries["battery1"].plan is not first_plan
    assert grown["soh"] == 97.0
    assert grown["cell_03"] == 3.33
    battery = sink._batteries["battery1"]
    assert session.payloads[state_topic] == _reference(list(battery.rows.values()), sink._inputs(battery))
