"""The CAN frame set encoded the plain way: every source, every signal, every frame packed anew.

This is how :func:`~bmsgate.inverter.can.profiles.build_frames` encoded before it reused frames and
skipped sources no frame reads; the tests check the fast path against it byte for byte, and
benchmarks/can_frames.py times both. It packs with its own copies of the DBC layouts, so nothing the
fast path remembers can leak into it.
"""

from __future__ import annotations

from bmsgate.inverter.bank import BankState
from bmsgate.inverter.can.dbc import DbcMessage
from bmsgate.inverter.can.profiles import (
    CanFrame,
    CanProfile,
    HeldMeasurements,
    OutputPhase,
    Requests,
    _fit_capacity,
    wire_values,
)
from bmsgate.inverter.status import InverterStatus


def reference_extreme_ids(bank: BankState, safe: bool) -> dict[str, float | None]:
    """The extremes' id characters as they were computed: every candidate's id spelled out."""
    texts = dict.fromkeys(("min_voltage", "max_voltage", "min_temperature", "max_temperature"), "")
    if not safe:
        position = {name: i for i, name in enumerate(bank.battery_ids, start=1)}
        cells = [
            (stat.voltage, f"P{position.get(s.battery_id, 0)}C{stat.cell:02d}")
            for s in bank.online
            for stat in (s.cell_min, s.cell_max)
            if stat is not None
        ]
        sensors = [
            (value, f"P{position.get(s.battery_id, 0)}T{n}")
            for s in bank.online
            for n, value in enumerate(s.temperatures, start=1)
        ]
        if cells:
            texts["min_voltage"] = min(cells, key=lambda c: c[0])[1]
            texts["max_voltage"] = max(cells, key=lambda c: c[0])[1]
        if sensors:
            texts["min_temperature"] = min(sensors, key=lambda c: c[0])[1]
            texts["max_temperature"] = max(sensors, key=lambda c: c[0])[1]
    values: dict[str, float | None] = {}
    for name, text in texts.items():
        for i in range(8):
            values[f"{name}_id_{i}"] = float(ord(text[i])) if i < len(text) else None
    return values


def reference_cell_values(bank: BankState | None) -> dict[str, float | None]:
    """The per-cell sources as they were computed: names formatted per set."""
    if bank is None:
        return {}
    pack = next((s for s in bank.online if s.cell_voltages), None)
    values: dict[str, float | None] = {}
    if pack is not None:
        values.update({f"cell_voltage_{n}": v for n, v in enumerate(pack.cell_voltages[:64], start=1)})
        values["cell_count"] = float(pack.cell_count)
    numbers = {}
    for key, highest in (("cell_voltage_max_number", True), ("cell_voltage_min_number", False)):
        stats = [stat for s in bank.online if (stat := s.cell_max if highest else s.cell_min) is not None]
        chosen = (max if highest else min)(stats, key=lambda stat: stat.voltage) if stats else None
        numbers[key] = None if chosen is None else float(chosen.cell)
    values.update(numbers)
    return values


def _is_held(source: str) -> bool:
    return source in {
        "soh",
        "temperature",
        "temperature_min",
        "temperature_max",
        "cell_voltage_min",
        "cell_voltage_max",
        "cell_delta",
        "remaining_capacity",
        "cycles",
    } or (source.startswith("cell_voltage_") and source[13:].isdigit())


def reference_hold_missing(values: dict[str, float | bool | None], held: HeldMeasurements) -> None:
    """hold_missing as it was: every source of the set visited in order."""
    count = values.get("cell_count")
    if isinstance(count, float | int) and held.values.get("cell_count") != count:
        for source in [s for s in held.values if s.startswith("cell_voltage_") and s[13:].isdigit()]:
            del held.values[source]
        held.values["cell_count"] = float(count)
    for source, value in values.items():
        if not _is_held(source):
            continue
        if value is None:
            misses = held.misses.get(source, 0) + 1
            held.misses[source] = misses
            if source in held.values and misses <= held.limit:
                values[source] = held.values[source]
        elif not isinstance(value, bool):
            held.values[source] = value
            held.misses.pop(source, None)


class ReferenceEncoder:
    """Encodes a profile's frame sets the plain way, with layouts of its own."""

    def __init__(self, profile: CanProfile) -> None:
        self.profile = profile
        self._layouts = {
            frame.message.frame_id: DbcMessage(
                frame.message.frame_id,
                frame.message.name,
                frame.message.length,
                frame.message.is_extended,
                frame.message.signals,
            )
            for frame in (*profile._frames, *profile._extra_frames)
        }

    def frames(
        self,
        status: InverterStatus,
        phase: OutputPhase,
        requests: Requests = Requests(),  # noqa: B008 - immutable
        *,
        held: HeldMeasurements | None = None,
    ) -> list[CanFrame]:
        """The frame set build_frames must send for these inputs."""
        profile = self.profile
        if not phase.transmits:
            return []
        values = wire_values(profile, status, phase, requests)
        if held is not None and not profile.quirks.invalid_markers:
            reference_hold_missing(values, held)
        _fit_capacity(values, profile.capacity_limit)
        compiled = profile._frames + profile._extra_frames if profile.quirks.victron_extras else profile._frames
        frames = []
        for frame in compiled:
            raw = {name: encoder(values) for name, encoder in frame.encoders}
            layout = self._layouts[frame.message.frame_id]
            data = layout.encode_raw(raw).ljust(frame.length, b"\0")
            frames.append(CanFrame(layout.frame_id, data, layout.is_extended))
        return frames
