"""A virtual battery: plausible pack physics plus a BMS that answers in real protocol bytes (sans-IO).

`PackModel` evolves a pack over (possibly accelerated) time: SoC follows current, cell voltages follow a
LiFePO4 open-circuit curve with per-cell drift and internal resistance, temperatures follow load, the
balancer switches on above a cell spread, and protections trip (and open a MOSFET) when limits are
crossed. `VirtualBms` answers request frames of any protocol definition by encoding the pack's state
with that definition's own field tables, so every built-in and user protocol can be simulated.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import math
import random
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from bmsgate.model import Alarm
from bmsgate.protocols.compiled import CompiledProtocol
from bmsgate.protocols.definition import PLACEHOLDER_SIZES, CommandSpec

__all__ = ["SIMULATED_SECRET", "FaultKind", "PackConfig", "PackModel", "VirtualBms", "lfp_open_circuit_voltage"]

SIMULATED_SECRET: Final = b"0000"
"""The secret the CLI and tests give a simulated pack whose protocol logs in with one (it accepts any)."""

# LiFePO4 open-circuit voltage by SoC (%), a typical cell at 25 °C.
_LFP_SOC: Final = (0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 100.0)
_LFP_VOLTS: Final = (2.50, 2.90, 3.05, 3.20, 3.25, 3.27, 3.29, 3.30, 3.31, 3.32, 3.33, 3.34, 3.36, 3.45, 3.60)


# Per `bisect_right` index: (SoC and voltage at the segment's start, its voltage and SoC spans). The spans
# are the same float subtractions the interpolation made on every call, made once.
_LFP_SEGMENTS: Final = tuple(
    (
        _LFP_SOC[index - 1],
        _LFP_VOLTS[index - 1],
        _LFP_VOLTS[index] - _LFP_VOLTS[index - 1],
        _LFP_SOC[index] - _LFP_SOC[index - 1],
    )
    for index in range(len(_LFP_SOC))
)


def lfp_open_circuit_voltage(soc: float) -> float:
    """Cell open-circuit voltage (V) for a state of charge (%), clamped to 0..100 %."""
    return _open_circuit_voltages(soc, (0.0,), 0.0)[0]


def _open_circuit_voltages(soc: float, offsets: list[float] | tuple[float, ...], ir: float) -> list[float]:
    """Terminal voltage of each cell at `soc` + its offset plus `ir` (V), without a call per cell."""
    voltages = []
    top = len(_LFP_SOC)
    for offset in offsets:
        # min(max(x, 0.0), 100.0) without two calls: the same value for every x (-0.0 and NaN pass alike).
        cell = soc + offset
        if cell < 0.0:
            cell = 0.0
        elif cell > 100.0:
            cell = 100.0
        index = bisect.bisect_right(_LFP_SOC, cell)
        if index >= top:
            voltages.append(_LFP_VOLTS[-1] + ir)
        else:
            low_soc, low_v, volts, span = _LFP_SEGMENTS[index]
            voltages.append(low_v + volts * (cell - low_soc) / span + ir)
    return voltages


FaultKind = Literal["none", "overtemperature", "cell_overvoltage", "cell_undervoltage", "short_circuit"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PackConfig:
    """What the simulated pack looks like and how it behaves.

    Attributes:
        cells: series cell count (4..32).
        capacity: Ah.
        ntc_count: battery temperature sensors.
        name: advertised / model name.
        initial_soc: %.
        current_amplitude: A; the load swings between charging and discharging this hard.
        current_period: s (simulated) of one charge/discharge cycle.
        drift_cell: 1-based cell that drifts away from the others (None: no drift).
        drift_rate: % SoC per simulated hour the drifting cell loses.
        fault: a fault that develops after `fault_after` simulated seconds.
        time_scale: simulated seconds per real second (the demo runs the day faster).
        seed: makes noise reproducible.
    """

    cells: int = 16
    capacity: float = 100.0
    ntc_count: int = 2
    name: str = "bmsgate-sim"
    serial_number: str = "SIM0001"
    initial_soc: float = 60.0
    current_amplitude: float = 30.0
    current_period: float = 3600.0
    drift_cell: int | None = None
    drift_rate: float = 2.0
    fault: FaultKind = "none"
    fault_after: float = 600.0
    ambient: float = 24.0
    time_scale: float = 1.0
    seed: int = 1
    cycles: int = 12

    def __post_init__(self) -> None:
        if not 1 <= self.cells <= 32:
            raise ValueError("cells must be between 1 and 32")
        if self.capacity <= 0:
            raise ValueError("capacity must be positive")
        if not 0 <= self.ntc_count <= 8:
            raise ValueError("ntc_count must be between 0 and 8")
        if self.drift_cell is not None and not 1 <= self.drift_cell <= self.cells:
            raise ValueError("drift_cell must be one of the pack's cells")


_CELL_RESISTANCE: Final = 0.0015  # Ω per cell, a typical 100 Ah prismatic cell plus busbar
_BALANCE_START_DELTA: Final = 0.015
_BALANCE_MIN_VOLTAGE: Final = 3.35
_BALANCE_RATE: Final = 0.5  # % SoC per simulated hour that the balancer moves a cell
_CELL_OVP: Final = 3.65
_CELL_OVP_RELEASE: Final = 3.50
_CELL_UVP: Final = 2.60
_CELL_UVP_RELEASE: Final = 2.90
_CHARGE_OTP: Final = 55.0
_OTP_RELEASE: Final = 50.0
_CHARGE_BLOCKERS: Final = frozenset({Alarm.CELL_OVERVOLTAGE, Alarm.CHARGE_OVERTEMPERATURE, Alarm.SHORT_CIRCUIT})
_DISCHARGE_BLOCKERS: Final = frozenset({Alarm.CELL_UNDERVOLTAGE, Alarm.DISCHARGE_OVERTEMPERATURE, Alarm.SHORT_CIRCUIT})


class PackModel:
    """Evolves one pack; call :meth:`advance` with elapsed real seconds, read :meth:`state`."""

    def __init__(self, config: PackConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)
        self.elapsed = 0.0
        self.soc = config.initial_soc
        self.cell_offsets = [self._random.uniform(-0.4, 0.4) for _ in range(config.cells)]
        self.current = 0.0
        self.temperatures = [config.ambient + 0.5 * index for index in range(config.ntc_count)]
        self.mosfet_temperature = config.ambient + 2.0
        self.charge_enabled = True
        self.discharge_enabled = True
        self.alarms: set[Alarm] = set()
        self.balancing_cells: set[int] = set()
        self.cycles = config.cycles
        self._throughput = 0.0
        self.manual_charge_off = False
        self.manual_discharge_off = False
        self.production_date = dt.date(2024, 3, 15)
        self._voltages_key: tuple[float, ...] = ()
        self._voltages: list[float] = []
        self._rounded_cells: tuple[float, ...] = ()
        self._constant_state: tuple[PackConfig, dict[str, Any]] | None = None

    # -- physics ---------------------------------------------------------------------------------

    def demanded_current(self) -> float:
        """The load/charger's wish before the BMS's FETs have their say (A, + = charging)."""
        config = self.config
        phase = 2 * math.pi * self.elapsed / config.current_period
        return config.current_amplitude * math.sin(phase) + self._random.uniform(-0.3, 0.3)

    def advance(self, real_seconds: float) -> None:
        """Move simulated time forward by `real_seconds` × time_scale."""
        if real_seconds <= 0:
            return
        config = self.config
        step = real_seconds * config.time_scale
        self.elapsed += step
        fault_active = config.fault != "none" and self.elapsed >= config.fault_after
        current = self.demanded_current()
        if current > 0 and not (self.charge_enabled and not self.manual_charge_off):
            current = 0.0
        if current < 0 and not (self.discharge_enabled and not self.manual_discharge_off):
            current = 0.0
        if self.soc >= 100.0 and current > 0:
            current = 0.0
        self.current = current
        delta_soc = current * step / 3600.0 / config.capacity * 100.0
        self.soc = min(max(self.soc + delta_soc, 0.0), 100.0)
        self._throughput += abs(current) * step / 3600.0
        if self._throughput >= 2 * config.capacity:
            self._throughput -= 2 * config.capacity
            self.cycles += 1
        if config.drift_cell is not None:
            self.cell_offsets[config.drift_cell - 1] -= config.drift_rate * step / 3600.0
        self._balance(step)
        self._heat(step, fault_active)
        if fault_active and config.fault == "cell_overvoltage":
            self.cell_offsets[0] = max(self.cell_offsets[0], 100.0 - self.soc + 1.0)
        if fault_active and config.fault == "cell_undervoltage":
            self.cell_offsets[-1] = min(self.cell_offsets[-1], -self.soc - 1.0)
        self._protect(fault_active)

    def _heat(self, step: float, fault_active: bool) -> None:
        config = self.config
        # First-order lag towards ambient plus I²-proportional heating.
        target = config.ambient + 0.004 * self.current**2
        if fault_active and config.fault == "overtemperature":
            target = config.ambient + 45.0
        blend = 1.0 - math.exp(-step / 300.0)
        self.temperatures = [
            temperature + (target + 0.3 * index - temperature) * blend
            for index, temperature in enumerate(self.temperatures)
        ]
        mosfet_target = config.ambient + 2.0 + 0.008 * self.current**2
        self.mosfet_temperature += (mosfet_target - self.mosfet_temperature) * blend

    def _balance(self, step: float) -> None:
        voltages = self._current_voltages()
        high, low = max(voltages), min(voltages)
        self.balancing_cells = set()
        if high - low > _BALANCE_START_DELTA and high > _BALANCE_MIN_VOLTAGE:
            threshold = low + _BALANCE_START_DELTA / 2
            for index, voltage in enumerate(voltages):
                if voltage > threshold:
                    self.balancing_cells.add(index + 1)
                    self.cell_offsets[index] -= _BALANCE_RATE * step / 3600.0

    def _protect(self, fault_active: bool) -> None:
        voltages = self._current_voltages()
        highest, lowest = max(voltages), min(voltages)
        alarms = self.alarms
        if highest > _CELL_OVP:
            alarms.add(Alarm.CELL_OVERVOLTAGE)
        elif highest < _CELL_OVP_RELEASE:
            alarms.discard(Alarm.CELL_OVERVOLTAGE)
        if lowest < _CELL_UVP:
            alarms.add(Alarm.CELL_UNDERVOLTAGE)
        elif lowest > _CELL_UVP_RELEASE:
            alarms.discard(Alarm.CELL_UNDERVOLTAGE)
        hottest = max(self.temperatures, default=self.config.ambient)
        if hottest > _CHARGE_OTP:
            alarms.update({Alarm.CHARGE_OVERTEMPERATURE, Alarm.DISCHARGE_OVERTEMPERATURE})
        elif hottest < _OTP_RELEASE:
            alarms.difference_update({Alarm.CHARGE_OVERTEMPERATURE, Alarm.DISCHARGE_OVERTEMPERATURE})
        if fault_active and self.config.fault == "short_circuit":
            alarms.add(Alarm.SHORT_CIRCUIT)
        self.charge_enabled = not (alarms & _CHARGE_BLOCKERS) and not self.manual_charge_off
        self.discharge_enabled = not (alarms & _DISCHARGE_BLOCKERS) and not self.manual_discharge_off

    # -- observation ---------------------------------------------------------------------------

    def cell_voltages(self) -> list[float]:
        """Per-cell terminal voltage (V): OCV at the cell's own SoC plus I·R."""
        return list(self._current_voltages())

    def _current_voltages(self) -> list[float]:
        """`cell_voltages` without the copy (the model's own readers do not change it)."""
        # One poll reads these three times (balancing, protection, the reply) mostly unchanged:
        # interpolating every cell each time was a fifth of the simulated BMS's CPU.
        key = (self.soc, self.current, *self.cell_offsets)
        if key != self._voltages_key:
            self._voltages = _open_circuit_voltages(self.soc, self.cell_offsets, self.current * _CELL_RESISTANCE)
            self._voltages_key = key
            self._rounded_cells = ()
        return self._voltages

    def _reported_cells(self) -> list[float]:
        """The cell voltages as the BMS reports them (mV resolution), rounded once per change of the cells."""
        voltages = self._current_voltages()
        if not self._rounded_cells:
            self._rounded_cells = tuple([round(voltage, 3) for voltage in voltages])
        return list(self._rounded_cells)

    def set_mosfets(self, *, charge: bool | None, discharge: bool | None) -> None:
        """Apply a MOSFET control command (as the app's switches do)."""
        if charge is not None:
            self.manual_charge_off = not charge
        if discharge is not None:
            self.manual_discharge_off = not discharge
        self._protect(fault_active=False)

    def state(self) -> dict[str, Any]:
        """The pack as snapshot targets (the input of `CompiledProtocol.encode_reply`)."""
        config = self.config
        cells = self._reported_cells()
        remaining = config.capacity * self.soc / 100.0
        state = {
            "voltage": round(sum(cells), 2),
            "current": round(self.current, 2),
            "soc": round(self.soc),
            "remaining_capacity": round(remaining, 2),
            "cycles": self.cycles,
            "cell_voltages": cells,
            "temperatures": [round(t, 1) for t in self.temperatures],
            "mosfet_temperature": round(self.mosfet_temperature, 1),
            "alarms": set(self.alarms),
            "charge_enabled": self.charge_enabled,
            "discharge_enabled": self.discharge_enabled,
            "balancing": bool(self.balancing_cells),
            "balancing_cells": sorted(self.balancing_cells),
            "balance_current": 0.06 if self.balancing_cells else 0.0,
            "device.production_date": self.production_date,
        }
        # What the configuration fixes, made once (a frozen config: the model's f-string was a tenth of this).
        constant = self._constant_state
        if constant is None or constant[0] is not config:
            constant = self._constant_state = (config, _constant_state(config))
        state.update(constant[1])
        return state


def _constant_state(config: PackConfig) -> dict[str, Any]:
    """The part of `PackModel.state` that only the configuration decides."""
    return {
        "soh": 98.0,
        "full_capacity": config.capacity,
        "design_capacity": config.capacity,
        "heating": False,
        "var.cell_count": config.cells,
        "var.ntc_count": config.ntc_count,
        "var.temperature_count": config.ntc_count,
        "device.model": f"SIM-{config.cells}S{round(config.capacity)}",
        "device.name": config.name,
        "device.hardware_version": "1.1",
        "device.software_version": "2.1",
        "device.serial_number": config.serial_number,
        "device.manufacturer": "bmsgate simulator",
    }


@dataclasses.dataclass(frozen=True, slots=True)
class _CommandPattern:
    name: str
    spec: CommandSpec
    regex: re.Pattern[bytes]
    params: tuple[tuple[str, str], ...]


class VirtualBms:
    """Answers a protocol's request frames from a `PackModel` (sans-IO).

    Feed it the bytes the host writes; it returns complete reply frames (the transport splits them
    into notifications and applies fault injection).
    """

    def __init__(self, protocol: CompiledProtocol, pack: PackModel) -> None:
        self.protocol = protocol
        self.pack = pack
        self._buffer = bytearray()
        self._requests = _answers_by_request(protocol)
        self._commands = [
            _compile_command_pattern(name, spec, protocol) for name, spec in protocol.definition.commands.items()
        ]
        self.requests_seen = 0
        simulator = protocol.definition.simulator
        self._overrides: dict[str, Any] = dict(simulator.state)
        self._noise = list(simulator.noise)
        self._append = dict(simulator.append)
        self._streaming = {request.reply for request in protocol.definition.requests if request.streaming}
        self.stream_interval = simulator.stream_interval
        self.device_name = simulator.device_name
        """The advertised name the simulated device has (definitions whose layouts or wire key depend on it)."""
        self._layout = protocol.variant_for_name(self.device_name)
        self.listen_keys: tuple[int, ...] = tuple(
            request.reply
            for request in protocol.definition.requests
            if not request.frame and not request.follows and request.reply is not None
        )
        """The replies a BMS that is never asked for them (empty request frames: listen) sends on its own. An
        empty frame that `follows` is no listen (docs/protocol-definitions.md, 'listen'): its reply comes after the
        previous request's, and a simulator that also streamed it could land it in the middle of another poll."""
        self.listening = bool(self.listen_keys)
        """Whether it sends them now (from the link's start; the simulator transport switches it)."""
        self.streaming_key: int | None = None
        """The reply the BMS keeps sending on its own since a streaming request (None: not streaming)."""

    def state(self) -> dict[str, Any]:
        """The pack's state with the definition's simulator overrides applied."""
        state = self.pack.state()
        state.update(self._overrides)
        return state

    def replies_for(self, key: int) -> list[bytes]:
        """Every frame that answers one request for reply `key`, as the real module sends them."""
        frames = [
            self.protocol.wire_reply(frame)
            for frame in self.protocol.encode_replies(key, self.state(), variant=self._layout)
        ]
        tail = self._append.get(key)
        if tail:
            frames[-1] += tail
        return [*self._noise, *frames] if self._noise else frames

    def stream(self) -> list[bytes]:
        """The frames a streaming BMS sends on its own now (empty when not streaming)."""
        keys = [
            *(self.listen_keys if self.listening else ()),
            *(() if self.streaming_key is None else (self.streaming_key,)),
        ]
        return [frame for key in keys for frame in self.replies_for(key)]

    def handle_write(self, data: bytes) -> list[bytes]:
        """Consume written bytes; return the reply frames they trigger (possibly none)."""
        self._buffer += data
        replies: list[bytes] = []
        while self._buffer:
            matched = self._match_one()
            if matched is None:
                break
            replies.extend(matched)
        # Unknown bytes must not accumulate forever (a real BMS ignores them).
        if len(self._buffer) > 256:
            del self._buffer[:-64]
        return replies

    def _match_one(self) -> list[bytes] | None:
        buffer = bytes(self._buffer)
        best: tuple[int, int, Callable[[], list[bytes]]] | None = None
        for frame, keys in self._requests:
            index = buffer.find(frame)
            if index >= 0 and (best is None or index < best[0]):
                best = (index, len(frame), self._replies_factory(keys))
        for pattern in self._commands:
            found = pattern.regex.search(buffer)
            if found and (best is None or found.start() < best[0]):
                best = (found.start(), found.end() - found.start(), self._command_factory(pattern, found))
        if best is None:
            return None
        index, length, produce = best
        del self._buffer[: index + length]
        self.requests_seen += 1
        return produce()

    def _replies_factory(self, keys: tuple[int | None, ...]) -> Callable[[], list[bytes]]:
        producers = [self._reply_factory(key) for key in keys]
        if len(producers) == 1:
            return producers[0]
        return lambda: [frame for produce in producers for frame in produce()]

    def _reply_factory(self, reply: int | None) -> Callable[[], list[bytes]]:
        def produce() -> list[bytes]:
            if reply is None:
                return []
            if reply in self._streaming:
                self.streaming_key = reply
            return self.replies_for(reply)

        return produce

    def _command_factory(self, pattern: _CommandPattern, found: re.Match[bytes]) -> Callable[[], list[bytes]]:
        def produce() -> list[bytes]:
            values = {}
            for (name, kind), group in zip(pattern.params, found.groups(), strict=True):
                values[name] = int.from_bytes(group, "little" if kind.endswith("le") else "big")
            charge, discharge = _decode_mosfet_params(pattern.spec, values)
            self.pack.set_mosfets(charge=charge, discharge=discharge)
            if pattern.spec.reply is None:
                return []
            return [self.protocol.encode_reply(pattern.spec.reply, {})]

        return produce


def _compile_command_pattern(name: str, spec: CommandSpec, protocol: CompiledProtocol) -> _CommandPattern:
    """A regex matching the command with any parameter values and any checksum bytes.

    Parameters become capture groups in template order; checksum bytes match anything.
    """
    template = spec.template()
    length = sum(len(part) if isinstance(part, bytes) else PLACEHOLDER_SIZES[part[1]] for part in template)
    framing = protocol.definition.framing
    checksum = framing.request_checksum or framing.checksum
    wildcard: set[int] = set()
    if checksum is not None:
        start = checksum.at if checksum.at >= 0 else length + checksum.at
        wildcard = set(range(start, start + checksum.size))
    regex = b""
    params: list[tuple[str, str]] = []
    position = 0
    for part in template:
        if isinstance(part, bytes):
            for offset, byte in enumerate(part):
                regex += b"." if position + offset in wildcard else re.escape(bytes([byte]))
            position += len(part)
        else:
            params.append(part)
            size = PLACEHOLDER_SIZES[part[1]]
            regex += b"(" + b"." * size + b")"
            position += size
    return _CommandPattern(name, spec, re.compile(regex, re.DOTALL), tuple(params))


def _decode_mosfet_params(spec: CommandSpec, values: Mapping[str, int]) -> tuple[bool | None, bool | None]:
    charge: bool | None = None
    discharge: bool | None = None
    for name, bits in spec.params.items():
        value = values.get(name, 0)
        if bits.charge_on and not bits.charge_off:
            # An "on" bit alone (JK: 1 = on, 0 = off): its absence means off.
            charge = value & bits.charge_on == bits.charge_on
        elif bits.charge_off and value & bits.charge_off == bits.charge_off:
            charge = False
        elif (bits.charge_on and value & bits.charge_on == bits.charge_on) or (
            "charge" in spec.affects and bits.charge_off
        ):
            charge = True
        if bits.discharge_on and not bits.discharge_off:
            discharge = value & bits.discharge_on == bits.discharge_on
        elif bits.discharge_off and value & bits.discharge_off == bits.discharge_off:
            discharge = False
        elif (bits.discharge_on and value & bits.discharge_on == bits.discharge_on) or (
            "discharge" in spec.affects and bits.discharge_off
        ):
            discharge = True
    return charge, discharge


def _answers_by_request(protocol: CompiledProtocol) -> list[tuple[bytes, tuple[int | None, ...]]]:
    """Each written request (its wire form) with the replies it triggers (a ``secret`` request: see below).

    Its own reply and those of the ``follows`` requests right after it (ABC answers one request with
    several frame types).
    """
    answers: list[tuple[bytes, tuple[int | None, ...]]] = []
    for request in protocol.definition.requests:
        if request.follows and answers:
            frame, keys = answers[-1]
            answers[-1] = (frame, (*keys, request.reply))
        elif request.secret is not None:
            # Any secret is accepted: the simulated pack is known by the bytes in front of it ('PW'), or else
            # those after it; the secret itself stays in the buffer as bytes nothing matches.
            at = request.secret.at
            answers.append((request.frame[:at] if at else request.frame[at:], (request.reply,)))
        elif request.frame:
            answers.append((protocol.wire(request.frame), (request.reply,)))
    return answers
