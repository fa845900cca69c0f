"""The live view at terminal widths: columns are abbreviated, then dropped, least important first."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import pytest
from rich.console import Console

from bmsgate.app.console import ConsoleSink
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo
from bmsgate.runtime.hub import SnapshotHub

NAMES = {"house": "House battery", "garage": "Garage rack", "camper": "Camper"}


@dataclass
class Link:
    success_rate: float | None = 0.98
    rssi: int | None = -71


def make_hub() -> SnapshotHub:
    hub = SnapshotHub(clock=lambda: 100.0)
    for battery_id in NAMES:
        hub.register(battery_id, stale_after=30.0)
    hub.publish(
        BatterySnapshot(
            battery_id="house",
            timestamp=99.0,
            voltage=53.12,
            current=-12.5,
            soc=76.4,
            cell_voltages=(3.318, 3.322, 3.319, 3.321) * 4,
            temperatures=(21.5, 22.25),
            alarms=frozenset({Alarm.CELL_OVERVOLTAGE, Alarm.CHARGE_OVERCURRENT, Alarm.LOW_SOC}),
            charge_enabled=False,
            discharge_enabled=True,
            device=DeviceInfo(model="BD4A17S4P", software_version="11.26"),
        )
    )
    hub.publish(
        BatterySnapshot(
            battery_id="garage",
            timestamp=99.0,
            voltage=26.4,
            current=3.0,
            soc=100.0,
            cell_voltages=(3.3,) * 8,
            charge_enabled=True,
            discharge_enabled=True,
        )
    )
    return hub


def render(width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    sink = ConsoleSink(console=console, mode="live", names=NAMES, link_stats=lambda _id: Link())
    console.print(sink.render(make_hub()))
    return console.export_text().splitlines()


def overview(lines: list[str]) -> dict[str, str]:
    """The overview row of each battery, by name."""
    rows = {}
    for line in lines:
        for name in NAMES.values():
            if line.lstrip().startswith(name) and "│" not in line and "╭" not in line:
                rows[name] = line
    return rows


# What each width must keep legible in the house row (most important first).
HOUSE_CELLS = ["House battery", "fresh", "76 %", "53.12 V", "-12.5 A", "-664 W", "4 mV"]


@pytest.mark.parametrize(("width", "kept"), [(80, 6), (120, 7), (200, 7)])
def test_overview_is_legible(width: int, kept: int) -> None:
    lines = render(width)
    assert all(len(line) <= width for line in lines)
    rows = overview(lines)
    assert set(rows) == set(NAMES.values()), "\n".join(lines)
    header = next(line for line in lines if "battery" in line and "state" in line)
    assert "…" not in "\n".join([header, *rows.values()])
    house = rows["House battery"]
    for cell in HOUSE_CELLS[:kept]:
        assert cell in house, f"{cell!r} missing at {width} columns:\n" + "\n".join(lines)
    assert "100 %" in rows["Garage rack"]
    assert "waiting" in rows["Camper"]


def test_narrow_overview_keeps_the_most_important_columns_in_order() -> None:
    house = overview(render(80))["House battery"]
    positions = [house.index(cell) for cell in ["House battery", "fresh", "53.12 V", "-12.5 A"]]
    assert positions == sorted(positions)
    assert "RSSI" not in house  # the link is less important than any of the listed columns


def test_wide_overview_shows_everything() -> None:
    lines = render(200)
    house = overview(lines)["House battery"]
    for cell in ["3.318–3.322", "22.2 °C", "OFF/on", "Cell overvoltage", "Charge overcurrent", "RSSI -71 dBm"]:
        assert cell in house, f"{cell!r} missing:\n" + "\n".join(lines)
    assert re.search(r"\bcells min–max\b", "\n".join(lines))


@pytest.mark.parametrize("width", [80, 120])
def test_cell_bars_fit(width: int) -> None:
    lines = render(width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines)
    for number in range(1, 17):
        assert re.search(rf"\b{number} [█░]+ 3\.3\d\d V", text), f"cell {number} bar missing:\n{text}"


def test_a_notice_stays_above_the_live_view_at_80_columns() -> None:
    console = Console(file=io.StringIO(), width=80, record=True, color_system=None)
    sink = ConsoleSink(console=console, mode="live", names=NAMES, link_stats=lambda _id: Link())
    banner = "fleet dashboard: http://127.0.0.1:8080/  admin token: Y8xMMIZC99zkwfKpFspermw3V7LKGDbgP57Z7TmUADA"
    sink.add_notice(banner)
    console.print(sink.render(make_hub()))
    text = console.export_text()
    assert text.splitlines()[0].startswith("fleet dashboard: http://127.0.0.1:8080/")
    assert "Y8xMMIZC99zkwfKpFspermw3V7LKGDbgP57Z7TmUADA" in text.replace("\n", "")  # folded, never cut
    assert all(len(line) <= 80 for line in text.splitlines())


def test_the_live_view_shows_a_new_snapshot_and_a_battery_going_stale() -> None:
    # Each battery's cells panel is rendered once per change: a new snapshot or staleness must show at once.
    now = [100.0]
    hub = SnapshotHub(clock=lambda: now[0])
    hub.register("house", stale_after=30.0)
    hub.publish(BatterySnapshot(battery_id="house", timestamp=1.0, cell_voltages=(3.301, 3.302, 3.303, 3.304)))
    console = Console(file=io.StringIO(), width=120, record=True, color_system=None)
    sink = ConsoleSink(console=console, mode="live", names=NAMES)
    console.print(sink.render(hub))
    first = console.export_text()
    hub.publish(BatterySnapshot(battery_id="house", timestamp=2.0, cell_voltages=(3.301, 3.302, 3.303, 3.377)))
    console.print(sink.render(hub))
    second = console.export_text()
    assert "3.304" in first and "3.377" not in first
    assert "3.377" in second and "3.304" not in second
    now[0] += 60.0
    console.print(sink.render(hub))
    assert "STALE" in console.export_text()
