"""Modbus register maps as data: load, validate and encode an :class:`InverterStatus` (pure).

A map is a YAML file (format in docs/modbus.md). Built-in maps ship as package data under
``bmsgate/data/modbus/<name>.yaml``; users point to their own file. Validation happens once, at load,
and every problem is a :class:`~bmsgate.errors.DefinitionError` naming the file, the entry and the
reason. Encoding is a loop over pre-compiled entries producing ``{kind: {address: value}}``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bmsgate.canonical import CanonicalModel, Real
from bmsgate.errors import DefinitionError
from bmsgate.inverter.bank import BankState
from bmsgate.inverter.status import BankStatus, FlowDirection, InverterStatus, initial_status
from bmsgate.model import Alarm

__all__ = [
    "FORMAT_VERSIONS",
    "MAX_WRITE_REGISTERS",
    "RegisterImage",
    "RegisterKind",
    "RegisterMap",
    "RegisterMapDefinition",
    "contiguous_runs",
    "load_register_map",
    "register_map_definition",
]

FORMAT_VERSIONS: Final = frozenset({1})
"""Register-map formats this bmsgate reads."""

MAX_WRITE_REGISTERS: Final = 123
"""Most registers one Write Multiple Registers (FC 16) request may carry."""


class RegisterKind(enum.StrEnum):
    """Modbus register table."""

    HOLDING = "holding"
    INPUT = "input"


RegisterImage = dict[RegisterKind, dict[int, int]]
"""Register values by table and 0-based protocol address."""

_NumberSource = Callable[[InverterStatus, BankState], float | None]
"""Reads a number from a status and the bank whose measurements to show (see :meth:`RegisterMap.encode`)."""


def _power(current: float, measured: BankState) -> float | None:
    voltage = measured.voltage
    return None if voltage is None else current * voltage


def _rated(current: float, status: InverterStatus) -> float | None:
    voltage = status.limits.max_voltage
    return None if voltage is None else current * voltage


_MEASUREMENTS: Final[Mapping[str, Callable[[BankState], float | None]]] = {
    "soc": lambda b: b.soc,
    "soh": lambda b: b.soh,
    "voltage": lambda b: b.voltage,
    "current": lambda b: b.current,
    "power": lambda b: b.power,
    "temperature": lambda b: b.temperature_mean,
    "temperature_min": lambda b: b.temperature_min,
    "temperature_max": lambda b: b.temperature_max,
    "mosfet_temperature": lambda b: b.mosfet_temperature,
    "cell_voltage_min": lambda b: b.cell_voltage_min,
    "cell_voltage_max": lambda b: b.cell_voltage_max,
    "cell_delta": lambda b: b.cell_delta,
    "remaining_capacity": lambda b: b.remaining_capacity,
    "full_capacity": lambda b: b.full_capacity,
    "remaining_energy": lambda b: b.stored_energy,
    "full_energy": lambda b: b.full_energy,
}
"""Sources measured on the packs: while the bank is stale they show the last fresh bank (if given)."""

_LIVE: Final[Mapping[str, _NumberSource]] = {
    "pack_count": lambda s, _m: s.bank.pack_count,
    "packs_online": lambda s, _m: s.bank.packs_online,
    "charge_voltage_limit": lambda s, _m: s.limits.charge_voltage,
    "charge_current_limit": lambda s, _m: s.limits.charge_current,
    "discharge_current_limit": lambda s, _m: s.limits.discharge_current,
    "charge_power_limit": lambda s, m: _power(s.limits.charge_current, m),
    "discharge_power_limit": lambda s, m: _power(s.limits.discharge_current, m),
    "max_charge_current": lambda s, _m: s.limits.max_charge_current,
    "max_discharge_current": lambda s, _m: s.limits.max_discharge_current,
    "rated_charge_power": lambda s, _m: _rated(s.limits.max_charge_current, s),
    "rated_discharge_power": lambda s, _m: _rated(s.limits.max_discharge_current, s),
    "max_voltage": lambda s, _m: s.limits.max_voltage,
    "min_voltage": lambda s, _m: s.limits.min_voltage,
    "charge_enable": lambda s, _m: float(s.limits.charge_allowed),
    "discharge_enable": lambda s, _m: float(s.limits.discharge_allowed),
    "heartbeat": lambda s, _m: s.heartbeat,
}
"""Sources about the bank now (limits are 0 while stale, counts are current, the heartbeat freezes)."""


def _measured(read: Callable[[BankState], float | None]) -> _NumberSource:
    return lambda _status, measured: read(measured)


_NUMBER_SOURCES: Final[Mapping[str, _NumberSource]] = {
    **{name: _measured(read) for name, read in _MEASUREMENTS.items()},
    **_LIVE,
}

_STATE_SOURCES: Final[Mapping[str, tuple[frozenset[str], Callable[[InverterStatus], str]]]] = {
    "status": (frozenset(BankStatus), lambda s: s.state.value),
    "direction": (frozenset(FlowDirection), lambda s: s.direction.value),
    "charge_mode": (frozenset({"bulk", "float"}), lambda s: s.charge_mode.value),
}

_FLAGS: Final[Mapping[str, Callable[[InverterStatus], bool]]] = {
    "stale": lambda s: s.bank.stale,
    "degraded": lambda s: s.bank.degraded,
    "charge_disabled": lambda s: not s.limits.charge_allowed,
    "discharge_disabled": lambda s: not s.limits.discharge_allowed,
    "inverter_missing": lambda s: s.inverter_present is False,
}
_BIT_NAMES: Final = frozenset(alarm.value for alarm in Alarm) | frozenset(_FLAGS)

_SPECIAL_SOURCES: Final = frozenset({"constant", "text", "alarms", "heartbeat_in"})
SOURCES: Final = frozenset(_NUMBER_SOURCES) | frozenset(_STATE_SOURCES) | _SPECIAL_SOURCES

_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "u16": (0, 0xFFFF),
    "s16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFF_FFFF),
    "s32": (-0x8000_0000, 0x7FFF_FFFF),
}

# -- the file format (validated with pydantic, reported as DefinitionError) ------------------------

_Address = Annotated[int, Field(ge=0, le=0x10000)]


class RegisterSpec(BaseModel):
    """One register entry of a map file."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: str = Field(min_length=1)
    address: _Address
    source: str
    kind: RegisterKind | None = None
    type: Literal["u16", "s16", "u32", "s32", "ascii"] = "u16"
    word_order: Literal["big", "little"] | None = None
    length: Annotated[int, Field(ge=1, le=125)] | None = None
    scale: Real = 1.0
    offset: Real = 0.0
    min: Real | None = None
    max: Real | None = None
    value: Real | None = None
    text: str | None = None
    bits: dict[Annotated[int, Field(ge=0, le=31)], str | list[str]] | None = None
    values: dict[str, int] | None = None
    missing: int = 0
    stale: int | None = None
    description: str = ""

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; known: {', '.join(sorted(SOURCES))}")
        return source

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, scale: float) -> float:
        if scale == 0 or not math.isfinite(scale):
            raise ValueError("scale must be a finite, non-zero number")
        return scale

    @model_validator(mode="after")
    def _consistent(self) -> RegisterSpec:
        source, kind = self.source, self.type
        if (kind == "ascii") != (source == "text"):
            raise ValueError("type ascii goes with source text (and only with it)")
        if source == "text":
            if self.text is None or self.length is None:
                raise ValueError("source text needs 'text' and 'length' (registers)")
            if not self.text.isascii() or len(self.text) > 2 * self.length:
                raise ValueError(f"text must be ASCII of at most {2 * self.length} characters")
        elif self.length is not None:
            raise ValueError("'length' only applies to type ascii")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        if source == "constant" and self.value is None:
            raise ValueError("source constant needs 'value'")
        if (source == "alarms") != (self.bits is not None):
            raise ValueError("'bits' goes with source alarms (and only with it)")
        if self.bits is not None:
            width = 16 if kind in {"u16", "s16"} else 32
            for bit, names in self.bits.items():
                if bit >= width:
                    raise ValueError(f"bit {bit} does not fit a {kind} register")
                for name in [names] if isinstance(names, str) else names:
                    if name not in _BIT_NAMES:
                        raise ValueError(f"bit {bit}: unknown alarm or flag {name!r}")
        if (source in _STATE_SOURCES) != (self.values is not None):
            raise ValueError(f"'values' goes with the sources {', '.join(sorted(_STATE_SOURCES))}")
        if self.values is not None:
            allowed = _STATE_SOURCES[source][0]
            unknown = set(self.values) - allowed
            if unknown:
                raise ValueError(f"unknown {source} states {sorted(unknown)}; known: {sorted(allowed)}")
            if set(self.values) != allowed:
                raise ValueError(f"'values' must map every {source} state: {sorted(allowed)}")
        return self


class BlockSpec(BaseModel):
    """A run of addresses that read as 0 where no entry is defined."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    kind: RegisterKind | None = None
    start: _Address
    count: Annotated[int, Field(ge=1, le=0x10000)]


class RegisterMapDefinition(BaseModel, CanonicalModel):
    """A register map file as validated data (its :meth:`ir` is the canonical form)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    format: Literal[1] = 1
    name: str = Field(min_length=1)
    version: str | None = None
    """The map's own version (free text), shown by the catalog."""
    description: str = ""
    inverters: list[str] = []
    """Inverters the map is known to fit (shown by ``bmsgate inverters list``)."""
    verified: str = ""
    """How the layout is known (as for CAN profiles); empty: not stated."""
    address_base: Literal[0, 1]
    kind: RegisterKind = RegisterKind.HOLDING
    word_order: Literal["big", "little"] = "big"
    blocks: list[BlockSpec] = []
    registers: list[RegisterSpec] = Field(min_length=1)

    def _ir_always(self) -> dict[str, Any]:
        return {"format": self.format}


# -- compiled form ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterEntry:
    """One compiled map entry."""

    name: str
    kind: RegisterKind
    address: int
    """0-based protocol address of the first register."""
    count: int
    source: str
    writable: bool
    description: str
    _encode: Callable[[InverterStatus, BankState], list[int]] = dataclasses.field(repr=False, compare=False)

    def encode(self, status: InverterStatus, measured: BankState | None = None) -> list[int]:
        """The entry's register values for `status`.

        Args:
            status: the bank, limits and bridge state now.
            measured: the bank whose measurements to show (default: ``status.bank``).
        """
        return self._encode(status, status.bank if measured is None else measured)


def _split(raw: int, type_name: str, word_order: str) -> list[int]:
    low, high = _RANGES[type_name]
    raw = min(max(raw, low), high)
    if type_name in {"u16", "s16"}:
        return [raw & 0xFFFF]
    unsigned = raw & 0xFFFF_FFFF
    words = [unsigned >> 16, unsigned & 0xFFFF]
    return words if word_order == "big" else words[::-1]


_Encoder = Callable[[InverterStatus, BankState], list[int]]


def _number_encoder(entry: RegisterSpec, word_order: str, read: _NumberSource) -> _Encoder:
    missing = _split(entry.missing, entry.type, word_order)
    stale = None if entry.stale is None else _split(entry.stale, entry.type, word_order)
    scale, offset, low, high = entry.scale, entry.offset, entry.min, entry.max

    def encode(status: InverterStatus, measured: BankState) -> list[int]:
        if stale is not None and status.bank.stale:
            return stale
        value = read(status, measured)
        if value is None or not math.isfinite(value):
            return missing
        # Out-of-range readings (a broken BMS's 255 % SoC) are clamped, never passed through.
        if low is not None:
            value = max(value, low)
        if high is not None:
            value = min(value, high)
        # Half away from zero after removing binary noise: (21.0 + 273.15) / 0.1 must give 2942.
        scaled = round((value + offset) / scale, 6)
        return _split(int(math.copysign(math.floor(abs(scaled) + 0.5), scaled)), entry.type, word_order)

    return encode


def _compile_entry(entry: RegisterSpec, word_order: str) -> _Encoder:
    order = entry.word_order or word_order
    if entry.source == "text":
        text = (entry.text or "").encode("ascii").ljust(2 * (entry.length or 0), b"\0")
        words = [text[i] << 8 | text[i + 1] for i in range(0, len(text), 2)]
        return lambda _status, _measured: words
    if entry.source == "constant":
        constant = entry.value or 0.0
        return _number_encoder(entry, order, lambda _status, _measured: constant)
    if entry.source == "heartbeat_in":
        initial = _split(math.floor((entry.value or 0.0) + 0.5), entry.type, order)
        return lambda _status, _measured: initial
    if entry.source == "alarms":
        masks: list[tuple[int, frozenset[Alarm], tuple[Callable[[InverterStatus], bool], ...]]] = []
        for bit, names in (entry.bits or {}).items():
            name_list = [names] if isinstance(names, str) else names
            alarms = frozenset(Alarm(name) for name in name_list if name not in _FLAGS)
            flags = tuple(_FLAGS[name] for name in name_list if name in _FLAGS)
            masks.append((1 << bit, alarms, flags))

        def alarm_bits(status: InverterStatus, _measured: BankState) -> float:
            active = status.bank.alarms
            word = 0
            for mask, alarms, flags in masks:
                if active & alarms or any(flag(status) for flag in flags):
                    word |= mask
            return float(word)

        bits_entry = entry.model_copy(update={"scale": 1.0, "offset": 0.0, "min": None, "max": None})
        return _number_encoder(bits_entry, order, alarm_bits)
    if entry.source in _STATE_SOURCES:
        table = entry.values or {}
        state_of = _STATE_SOURCES[entry.source][1]
        return _number_encoder(entry, order, lambda status, _measured: table[state_of(status)])
    return _number_encoder(entry, order, _NUMBER_SOURCES[entry.source])


class RegisterMap:
    """A validated, compiled register map.

    Build one with :func:`load_register_map` or :meth:`from_dict`.
    """

    def __init__(
        self,
        *,
        definition: RegisterMapDefinition,
        name: str,
        description: str,
        source: str,
        entries: tuple[RegisterEntry, ...],
        layout: RegisterImage,
    ) -> None:
        self.definition = definition
        self.name = name
        self.description = description
        self.source = source
        self.entries = entries
        self._layout = layout
        self._computed = tuple(entry for entry in entries if not entry.writable)

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<register map>") -> RegisterMap:
        """Validate and compile a map given as parsed YAML (or its canonical IR).

        Raises:
            DefinitionError: naming `source`, the entry and the reason.
        """
        return cls.compile(register_map_definition(data, source=source), source=source)

    @classmethod
    def compile(cls, parsed: RegisterMapDefinition, *, source: str = "<register map>") -> RegisterMap:
        """Compile a validated map (the checks that need the whole map happen here).

        Raises:
            DefinitionError: overlapping or out-of-range addresses, duplicate names.
        """
        base = parsed.address_base
        layout: RegisterImage = {RegisterKind.HOLDING: {}, RegisterKind.INPUT: {}}
        for index, block in enumerate(parsed.blocks):
            start = block.start - base
            if start < 0 or start + block.count > 0x10000:
                raise DefinitionError("block outside 0..65535", source=source, field=f"blocks[{index}]")
            for address in range(start, start + block.count):
                layout[block.kind or parsed.kind][address] = 0

        entries: list[RegisterEntry] = []
        owners: dict[tuple[RegisterKind, int], str] = {}
        names: set[str] = set()
        for index, raw in enumerate(parsed.registers):
            where = f"registers[{index}] ({raw.name})"
            if raw.name in names:
                raise DefinitionError("duplicate register name", source=source, field=where)
            names.add(raw.name)
            kind = raw.kind or parsed.kind
            writable = raw.source == "heartbeat_in"
            if writable and kind is not RegisterKind.HOLDING:
                raise DefinitionError("heartbeat_in must be a holding register", source=source, field=where)
            count = raw.length if raw.type == "ascii" else (2 if raw.type in {"u32", "s32"} else 1)
            address = raw.address - base
            if address < 0 or address + (count or 1) > 0x10000:
                raise DefinitionError(
                    f"address {raw.address} with base {base} is outside 0..65535", source=source, field=where
                )
            for offset in range(count or 1):
                owner = owners.setdefault((kind, address + offset), raw.name)
                if owner != raw.name:
                    raise DefinitionError(
                        f"{kind.value} register {address + offset + base} already used by {owner!r}",
                        source=source,
                        field=where,
                    )
            entry = RegisterEntry(
                name=raw.name,
                kind=kind,
                address=address,
                count=count or 1,
                source=raw.source,
                writable=writable,
                description=raw.description,
                _encode=_compile_entry(raw, parsed.word_order),
            )
            entries.append(entry)
        compiled = cls(
            definition=parsed,
            name=parsed.name,
            description=parsed.description,
            source=source,
            entries=tuple(entries),
            layout=layout,
        )
        # Entries not yet computed read as their "missing" value; writable ones as their initial value.
        for entry in entries:
            compiled._store(layout, entry, entry.encode(_STARTING))
        return compiled

    @staticmethod
    def _store(image: RegisterImage, entry: RegisterEntry, words: list[int]) -> None:
        table = image[entry.kind]
        for offset, word in enumerate(words):
            table[entry.address + offset] = word

    def layout(self) -> RegisterImage:
        """Every readable address with its initial value (a fresh copy)."""
        return {kind: dict(table) for kind, table in self._layout.items()}

    def encode(self, status: InverterStatus, *, last_fresh: BankState | None = None) -> RegisterImage:
        """Register values of every computed (not writable) entry for `status`.

        Args:
            status: the bank, limits and bridge state now.
            last_fresh: the last bank that was not stale. While ``status.bank`` is stale, measurement
                sources (SoC, voltage, temperatures, ...) show this bank's values instead of their
                ``missing`` value; limits, states, alarm bits and counts always come from `status`, and
                an entry's ``stale`` value still wins. Without it (no data yet) they read ``missing``.
        """
        measured = status.bank
        if measured.stale and last_fresh is not None and not last_fresh.stale:
            measured = last_fresh
        image: RegisterImage = {RegisterKind.HOLDING: {}, RegisterKind.INPUT: {}}
        for entry in self._computed:
            self._store(image, entry, entry.encode(status, measured))
        return image

    def writable(self) -> Iterator[RegisterEntry]:
        """Entries a master may write (the incoming heartbeat)."""
        return (entry for entry in self.entries if entry.writable)

    @property
    def heartbeat_in(self) -> RegisterEntry | None:
        """The register the inverter writes periodically, if the map has one."""
        return next(self.writable(), None)

    def entry(self, name: str) -> RegisterEntry:
        """An entry by name.

        Raises:
            KeyError: no such entry.
        """
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def __repr__(self) -> str:
        return f"RegisterMap({self.name!r}, {len(self.entries)} entries, from {self.source})"


def _describe(loc: tuple[int | str, ...], data: object) -> str:
    """A readable field path for a pydantic error location, naming the register entry."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            name = node[item].get("name") if isinstance(node, list) and isinstance(node[item], dict) else None
            if name:
                parts[-1] += f" ({name})"
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts)


def register_map_definition(data: object, *, source: str = "<register map>") -> RegisterMapDefinition:
    """Validate parsed YAML (or the canonical IR) into a map definition; the format is checked first.

    Raises:
        DefinitionError: naming `source`, the entry and the reason.
    """
    if not isinstance(data, Mapping):
        raise DefinitionError("a register map must be a mapping", source=source)
    version = data.get("format", 1)
    if version not in FORMAT_VERSIONS:
        raise DefinitionError(
            f"register-map format {version!r} is not supported by this bmsgate (it reads format "
            f"{', '.join(map(str, sorted(FORMAT_VERSIONS)))})",
            source=source,
            field="format",
        )
    try:
        return RegisterMapDefinition.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise DefinitionError(error["msg"], source=source, field=_describe(error["loc"], data)) from None


def load_register_map(name_or_path: str | Path) -> RegisterMap:
    """A map from the catalog: a name (``generic``) along the search path, or a YAML file's path.

    Raises:
        DefinitionError: the file is missing, not YAML, or not a valid map (missing names list the known ones).
    """
    from bmsgate.catalog import default_catalog  # noqa: PLC0415 - the catalog imports this module

    return default_catalog().register_map(name_or_path)


def contiguous_runs(values: Mapping[int, int], max_length: int = MAX_WRITE_REGISTERS) -> list[tuple[int, list[int]]]:
    """Split ``{address: value}`` into ``(start, values)`` runs of consecutive addresses for writing."""
    runs: list[tuple[int, list[int]]] = []
    for address in sorted(values):
        if runs and runs[-1][0] + len(runs[-1][1]) == address and len(runs[-1][1]) < max_length:
            runs[-1][1].append(values[address])
        else:
            runs.append((address, [values[address]]))
    return runs


_STARTING: Final = initial_status()
