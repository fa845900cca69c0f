"""The compiler: turns a validated definition into fast decode (and encode) functions, once.

Every field becomes a small closure around a precompiled `struct.Struct`; decoding a reply is a loop
over those closures writing into a plain dict that becomes one `BatterySnapshot`. The same field
tables run backwards (`encode_reply`), which is how the simulator speaks every protocol, including
user-supplied ones, without protocol-specific code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import itertools
import math
import re
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from bmsgate.errors import DecodeError, DefinitionError, FrameError, ProtocolError
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo
from bmsgate.protocols.checksums import CHECKSUMS
from bmsgate.protocols.definition import (
    BOOL_TARGETS,
    FLOAT_TARGETS,
    INT_TARGETS,
    INTEGER_SIZES,
    LIST_TARGETS,
    PLACEHOLDER_SIZES,
    CommandSpec,
    FieldSpec,
    FrameIndexSpec,
    GattProfile,
    ProtocolDefinition,
    ReplySpec,
    RequestSpec,
    parse_hex,
)
from bmsgate.protocols.framing import Frame, FrameAssembler, FrameChecker

__all__ = ["CompiledProtocol", "compile_definition", "decode_hex_frames"]

_STRUCT_CODES: Final = {
    "u8": "B",
    "s8": "b",
    "u16": "H",
    "s16": "h",
    "u32": "I",
    "s32": "i",
    "u64": "Q",
    "s64": "q",
    "f32": "f",
}
_SIGNED: Final = {"s8", "s16", "s32", "s64"}
_LEADING_NUMBER: Final = re.compile(r"\d+")
_STRING_CACHE_SIZE: Final = 32

# A decode step reads `payload` and writes into the output dict, the device dict or the variables.
_Step = Callable[[bytes, dict[str, Any], dict[str, Any], dict[str, int]], None]
# An encode step writes values from `state` into `buffer` (at payload-relative offsets).
_EncodeStep = Callable[[bytearray, Mapping[str, Any], dict[str, int]], None]


def _raw_reader(field: FieldSpec, endian: str) -> tuple[Callable[[bytes | bytearray, int], Any], int]:
    """A function reading one raw value of the field's type at an offset, and its size."""
    if field.type == "u24":
        byteorder: Literal["big", "little"] = "big" if endian == ">" else "little"

        def read_u24(payload: bytes | bytearray, offset: int) -> int:
            return int.from_bytes(payload[offset : offset + 3], byteorder)

        return read_u24, 3
    compiled = struct.Struct(endian + _STRUCT_CODES[field.type])
    unpack = compiled.unpack_from

    def read(payload: bytes | bytearray, offset: int) -> Any:
        return unpack(payload, offset)[0]

    return read, compiled.size


def _raw_writer(field: FieldSpec, endian: str) -> Callable[[bytearray, int, Any], None]:
    if field.type == "u24":
        byteorder: Any = "big" if endian == ">" else "little"

        def write_u24(buffer: bytearray, offset: int, value: Any) -> None:
            buffer[offset : offset + 3] = int(value).to_bytes(3, byteorder)

        return write_u24
    compiled = struct.Struct(endian + _STRUCT_CODES[field.type])
    pack_into = compiled.pack_into

    def write(buffer: bytearray, offset: int, value: Any) -> None:
        pack_into(buffer, offset, value)

    return write


def _clamp_raw(field: FieldSpec, value: float) -> int | float:
    if field.type == "f32":
        return value
    bits = 8 * INTEGER_SIZES[field.type]
    if field.type in _SIGNED:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    return max(low, min(high, round(value)))


def _version_text(style: str, raw: int) -> str:
    if style == "nibbles":
        return f"{raw >> 4}.{raw & 0x0F}"
    if style == "byte_tenths":
        return f"{raw / 10:.1f}"
    return f"{raw >> 8}.{raw & 0xFF}"  # major_minor: high byte . low byte


def _version_raw(style: str, text: str) -> int:
    major, _, minor = str(text).partition(".")
    if style == "nibbles":
        return (int(major) << 4) | (int(minor or 0) & 0x0F)
    if style == "byte_tenths":
        return round(float(text) * 10)
    return (int(major) << 8) | (int(minor or 0) & 0xFF)


def _bits(value: int, high: int, low: int) -> int:
    return (value >> low) & ((1 << (high - low + 1)) - 1)


@dataclasses.dataclass(frozen=True, slots=True)
class _Layout:
    """The compiled field table of one reply in one layout."""

    min_payload: int
    record: Callable[[bytes, int], tuple[Any, ...]] | None
    """One unpack of every fixed-offset scalar (compiled once; the fast path)."""
    plain: tuple[tuple[int, str, float, float], ...]
    """(record index, snapshot field, scale, add) for plain numbers: handled inline."""
    sinks: tuple[tuple[int, _Sink], ...]
    """(record index, sink) for scalars that need a transform (bits, flags, dates, variables...)."""
    plain_extras: tuple[tuple[int, str, Any, Any], ...]
    """(record index, extras key, scale, add) for plain numbers into extras (ints stay ints)."""
    plain_cast: tuple[tuple[int, str, type], ...]
    """(record index, snapshot field, bool or int) for unscaled flags and counters."""
    steps: tuple[_Step, ...]
    """Per-field steps for what the record cannot read (lists, strings, odd sizes, conditions)."""
    encoders: tuple[_EncodeStep, ...]
    memo: bool = False
    """The result depends on the frame's bytes alone and sets only scalars: decode each distinct frame once."""
    shifted: tuple[tuple[tuple[tuple[str, int], ...], _Layout], ...] = ()
    """Fields placed after variable-length lists: ((variable, bytes per unit) terms, their sub-layout)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _CompiledReply:
    key: int
    spec: ReplySpec
    default: _Layout
    """The layout of a definition without variants (fields without a `variants` list)."""
    layouts: dict[str, _Layout]
    """Per layout name when the definition has variants (empty otherwise)."""
    per_frame: int = 0
    """Items each frame of an indexed reply carries (its first list's count)."""
    frames_var: str | None = None
    """The variable whose value ÷ per_frame says how many frames answer one request."""

    @property
    def encoders(self) -> tuple[_EncodeStep, ...]:
        """Encode steps of the default layout."""
        return self.default.encoders

    @property
    def min_payload(self) -> int:
        """Payload bytes the widest layout needs."""
        return max([self.default.min_payload, *(layout.min_payload for layout in self.layouts.values())])


# Keys of the decode output dict that hold intermediate results, never snapshot fields.
_POSITIONED: Final = "#positioned"
_EXTRA_LISTS: Final = "#extra_lists"
_FRAME: Final = "#frame"


class CompiledProtocol:
    """A definition compiled for fast decoding, frame checking, request building and encoding."""

    def __init__(self, definition: ProtocolDefinition) -> None:
        self.definition = definition
        self.name = definition.name
        framing = definition.framing
        self.checker = FrameChecker(framing)
        self._payload_offset = framing.payload_offset
        self._trailer = framing.trailer_size
        self._variants = definition.variants
        self._select = definition.variants.select[4:] if definition.variants else ""
        self._limits: dict[str, str | None] = {}
        self._replies = {key: self._compile_reply(key, spec) for key, spec in definition.replies.items()}
        order = [request.reply for request in definition.requests if request.reply is not None]
        self._order = {key: index for index, key in enumerate(order)}
        self._keyed = framing.key is not None
        self._list_starts = _list_starts(definition, order)
        self._memo: dict[int | None, tuple[bytes, _Layout, dict[str, Any], dict[str, Any], dict[str, int]]] = {}
        self._device_cache: dict[tuple[tuple[str, Any], ...], DeviceInfo] = {}

    # -- what the definition says ---------------------------------------------------------------------

    @property
    def title(self) -> str:
        """Human-readable protocol name."""
        return self.definition.title

    @property
    def gatt_profiles(self) -> list[GattProfile]:
        """GATT service/characteristic triples to try, in order (empty for serial-only protocols)."""
        return list(self.definition.gatt.profiles) if self.definition.gatt else []

    @property
    def requests(self) -> list[RequestSpec]:
        """The requests of one poll, in order."""
        return list(self.definition.requests)

    @property
    def possible_alarms(self) -> frozenset[Alarm]:
        """Every alarm this protocol can raise."""
        return self.definition.possible_alarms

    @property
    def variant_names(self) -> tuple[str, ...]:
        """Names of the layouts a decoded value chooses between (empty when there is one layout)."""
        return tuple(self._variants.choices) if self._variants else ()

    def variant_for(self, variables: Mapping[str, int]) -> str | None:
        """The layout the variables select (None when the definition has a single layout)."""
        if self._variants is None:
            return None
        return self._variants.choose(variables.get(self._select))

    def __repr__(self) -> str:
        return f"<CompiledProtocol {self.name} from {self.definition.source}>"

    # -- decoding -------------------------------------------------------------------------------

    def new_assembler(self) -> FrameAssembler:
        """A fresh assembler for one connection."""
        return FrameAssembler(self.definition.framing, checker=self.checker)

    def check_frame(self, raw: bytes) -> Frame:
        """Validate a complete frame (see `FrameChecker.check`)."""
        return self.checker.check(raw)

    def decode(
        self,
        frames: Iterable[Frame | bytes | bytearray],
        *,
        battery_id: str = "battery",
        timestamp: float | None = None,
        device: DeviceInfo | None = None,
        variant: str | None = None,
    ) -> BatterySnapshot:
        """Decode the reply frames of one poll into one snapshot.

        Frames are processed in the definition's request order (so values such as a cell count
        decoded from one reply are available to the next); unknown reply types are ignored.

        Args:
            frames: the poll's reply frames (raw bytes are checked first).
            battery_id: put into the snapshot.
            timestamp: Unix time of the poll (default: now).
            device: identity known from earlier polls; this poll's values take precedence.
            variant: force a layout (see `variant_names`) instead of the one a decoded value selects.

        Raises:
            FrameError: a raw frame fails its length/marker/checksum check.
            DecodeError: a frame is too short for its fields, or values are impossible.
            ProtocolError: the BMS flagged an error in a reply's status byte.
            ValueError: `variant` is not one of `variant_names`.
        """
        if variant is not None and variant not in self.variant_names:
            raise ValueError(f"{self.name}: unknown variant {variant!r}; choose one of {list(self.variant_names)}")
        out: dict[str, Any] = {}
        device_fields: dict[str, Any] = {}
        variables: dict[str, int] = {}
        if not self._run(frames, out, device_fields, variables, variant):
            raise DecodeError(f"{self.name}: none of the frames is a reply this protocol decodes")
        if _POSITIONED in out:
            self._place_positioned(out, variables)
        if _EXTRA_LISTS in out:
            extras = out.setdefault("extras", {})
            for name, values in out.pop(_EXTRA_LISTS).items():
                extras.update(zip(_numbered_keys(name, len(values)), values, strict=True))
        return self._build_snapshot(out, device_fields, battery_id, timestamp, device)

    def variables_of(self, frames: Iterable[Frame | bytes | bytearray]) -> dict[str, int]:
        """The ``var.*`` values the frames decoded so far define (best effort; never raises)."""
        variables: dict[str, int] = {}
        with contextlib.suppress(ProtocolError, ValueError):
            self._run(frames, {}, {}, variables, None)
        return variables

    def frames_expected(self, key: int | None, variables: Mapping[str, int]) -> int | None:
        """How many frames of reply `key` answer one request (None: unknown until a variable is decoded)."""
        reply = self._replies.get(key) if key is not None else None
        if reply is None or reply.spec.index is None:
            return 1
        if reply.frames_var is None:
            return None
        count = variables.get(reply.frames_var)
        if count is None:
            return None
        return max(1, -(-count // reply.per_frame))

    def _run(
        self,
        frames: Iterable[Frame | bytes | bytearray],
        out: dict[str, Any],
        device_fields: dict[str, Any],
        variables: dict[str, int],
        variant: str | None,
    ) -> bool:
        check = self.checker.check
        keyed = self._keyed
        order = self._order
        unknown_rank = len(order)
        checked: list[Frame] = []
        ranks: list[int] = []
        in_order = True
        for item in frames:
            frame = item if item.__class__ is Frame else check(bytes(item))  # type: ignore[arg-type]
            if not frame.status_ok:
                raise ProtocolError(
                    f"{self.name}: the BMS answered reply {frame.key:#04x} with an error status"
                    if frame.key is not None
                    else f"{self.name}: the BMS answered with an error status"
                )
            if keyed:
                rank = order.get(frame.key, unknown_rank) if frame.key is not None else 0
                if ranks and rank < ranks[-1]:
                    in_order = False
                ranks.append(rank)
            checked.append(frame)
        if not in_order:
            # Stable: frames of the same reply keep their arrival order (numbered multi-frame replies).
            checked = [frame for _, _, frame in sorted(zip(ranks, range(len(ranks)), checked, strict=True))]
        decoded_any = False
        offset, trailer = self._payload_offset, self._trailer
        variants = self._variants
        replies = self._replies
        single = None if keyed else next(iter(replies.values()), None)
        for frame in checked:
            reply = replies.get(frame.key) if keyed else single  # type: ignore[arg-type]
            if reply is None:
                continue
            raw = frame.raw
            payload = raw[offset : len(raw) - trailer] if trailer else raw[offset:]
            layout = reply.default
            if variants is not None:
                layout = reply.layouts[variant or variants.choose(variables.get(self._select))]
            if len(payload) < layout.min_payload:
                raise DecodeError(
                    f"{self.name}: reply {reply.spec.name} has {len(payload)} payload bytes, "
                    f"needs at least {layout.min_payload}"
                )
            decoded_any = True
            if not layout.memo:
                _apply_layout(layout, payload, out, device_fields, variables)
                continue
            # A reply that reads no variable and only sets scalars (device information, re-sent from
            # the client's connection cache on every poll) decodes once per distinct frame.
            cached = self._memo.get(frame.key)
            if cached is None or cached[1] is not layout or cached[0] != raw:
                fresh: tuple[dict[str, Any], dict[str, Any], dict[str, int]] = ({}, {}, {})
                _apply_layout(layout, payload, *fresh)
                cached = self._memo[frame.key] = (raw, layout, *fresh)
            _, _, memo_out, memo_device, memo_variables = cached
            for name, value in memo_out.items():
                if name == "extras":
                    out.setdefault("extras", {}).update(value)
                else:
                    out[name] = value
            device_fields.update(memo_device)
            variables.update(memo_variables)
        return decoded_any

    def _place_positioned(self, out: dict[str, Any], variables: Mapping[str, int]) -> None:
        """Turn items placed by frame number into ordered lists; a missing frame is an error."""
        for target, items in out.pop(_POSITIONED).items():
            limit = self._limits.get(target)
            size = variables.get(limit, max(items) + 1 if items else 0) if limit else (max(items) + 1 if items else 0)
            missing = [position for position in range(size) if position not in items]
            if missing:
                raise DecodeError(f"{self.name}: {target} item {missing[0] + 1} is missing (its frame did not arrive)")
            values = [items[position] for position in range(size)]
            if target.startswith("extras."):
                out.setdefault(_EXTRA_LISTS, {}).setdefault(target[7:], []).extend(values)
            else:
                out.setdefault(target, []).extend(values)

    def _device_info(self, device_fields: dict[str, Any]) -> DeviceInfo:
        """The device info for these decoded fields; identical fields (every poll) reuse one object."""
        key = tuple(device_fields.items())
        info = self._device_cache.get(key)
        if info is None:
            if self.definition.manufacturer:
                device_fields.setdefault("manufacturer", self.definition.manufacturer)
            info = DeviceInfo(**device_fields)
            if len(self._device_cache) >= _DEVICE_CACHE_SIZE:
                self._device_cache.clear()
            self._device_cache[key] = info
        return info

    def _build_snapshot(
        self,
        out: dict[str, Any],
        device_fields: dict[str, Any],
        battery_id: str,
        timestamp: float | None,
        device: DeviceInfo | None,
    ) -> BatterySnapshot:
        for name in _PERCENT_TARGETS:
            value = out.get(name)
            if value is not None and not 0.0 <= value <= 100.0:
                # A percentage outside 0..100 is impossible content, not a reading to pass on.
                raise DecodeError(f"{self.name}: {name} of {value:g} % is impossible")
        extras = out.pop("extras", None)
        for name in ("cell_voltages", "temperatures"):
            if name in out:
                out[name] = tuple(out[name])
        if "balancing_cells" in out:
            out["balancing_cells"] = tuple(sorted(out["balancing_cells"]))
        if "alarms" in out:
            out["alarms"] = frozenset(out["alarms"])
        info = self._device_info(device_fields) if device_fields else None
        if info is not None and device is not None:
            info = info.merged_over(device)
        return BatterySnapshot(
            battery_id=battery_id,
            timestamp=time.time() if timestamp is None else timestamp,
            protocol=self.name,
            device=info or device or DeviceInfo(manufacturer=self.definition.manufacturer),
            extras=extras or {},
            **out,
        )

    # -- compiling --------------------------------------------------------------------------------

    def _compile_reply(self, key: int, spec: ReplySpec) -> _CompiledReply:
        compiled: list[tuple[FieldSpec, _Step, _EncodeStep, int]] = []
        per_frame, frames_var = 0, None
        for index, field in enumerate(spec.fields):
            where = f"{self.definition.source}: replies[{key:#04x}].fields[{index}] ({field.target})"
            step, encoder, end = _compile_field(field, self.definition.endian, where, spec.index)
            if field.when is not None:
                step, encoder = _conditional(field, step, encoder)
            if field.shift:
                encoder = _shifted_encoder(field, encoder)
            compiled.append((field, step, encoder, end))
            if spec.index is not None and field.count is not None:
                self._limits[field.target] = field.limit[4:] if field.limit else None
                if not per_frame and isinstance(field.count, int):
                    per_frame, frames_var = field.count, field.limit[4:] if field.limit else None
        source = f"{self.definition.source}: replies[{key:#04x}]"
        layouts: dict[str, _Layout] = {}
        if self._variants is not None:
            for name in self._variants.choices:
                chosen = [item for item in compiled if item[0].variants is None or name in item[0].variants]
                layouts[name] = _compile_layout(chosen, spec.min_payload, self.definition.endian, source)
        common = [item for item in compiled if item[0].variants is None]
        default = _compile_layout(common, spec.min_payload, self.definition.endian, source)
        return _CompiledReply(key, spec, default, layouts, per_frame, frames_var)

    def encode_reply(
        self,
        key: int,
        state: Mapping[str, Any],
        *,
        status_ok: bool = True,
        variant: str | None = None,
        frame_index: int = 0,
    ) -> bytes:
        """Build a complete, valid reply frame of type `key` from snapshot-like `state`.

        `state` maps targets (``voltage``, ``cell_voltages``, ``device.model``, ``extras.x``,
        ``var.cell_count``, ``alarms`` as a set of `Alarm`, ``balancing_cells`` as cell numbers) to
        values; missing values encode as zero / absent. The layout is `variant`, else the one the
        state's selector variable chooses. `frame_index` picks the slice of an indexed reply.
        """
        reply = self._replies[key]
        framing = self.definition.framing
        variables: dict[str, int] = {}
        for field in reply.spec.fields:
            if isinstance(field.count, str) and field.count.startswith("var."):
                values = state.get(field.target) or ()
                variables.setdefault(field.count[4:], len(values))
        for target, value in state.items():
            if target.startswith("var.") and value is not None:
                variables[target[4:]] = int(value)
        encoders = reply.default.encoders
        if self._variants is not None:
            encoders = reply.layouts[variant or self._variants.choose(variables.get(self._select))].encoders
        variables[_FRAME] = frame_index
        for target, start in self._list_starts.get(key, {}).items():
            # This reply continues a list that earlier replies of the poll began (cells 9-16 after 1-8).
            variables["@" + target] = start
        payload = bytearray(_payload_size(reply, state, variables))
        if reply.spec.index is not None:
            payload[reply.spec.index.at] = (reply.spec.index.base + frame_index) & 0xFF
        for encoder in encoders:
            encoder(payload, state, variables)
        if framing.fixed_length is not None:
            total = framing.fixed_length
        else:
            total = framing.payload_offset + len(payload) + framing.trailer_size
        frame = bytearray(total)
        frame[: len(framing.start)] = framing.start
        body_end = total - framing.trailer_size if framing.trailer_size else total
        room = body_end - framing.payload_offset
        frame[framing.payload_offset : framing.payload_offset + min(room, len(payload))] = payload[:room]
        if framing.key is not None:
            frame[framing.key.offset : framing.key.offset + framing.key.size] = key.to_bytes(framing.key.size, "big")
        if framing.status is not None:
            frame[framing.status.offset] = framing.status.ok[0] if status_ok else 0x80
        if framing.length is not None:
            length = framing.length
            value = total - length.add
            frame[length.offset : length.offset + length.size] = value.to_bytes(length.size, length.endian)
        if framing.end is not None:
            frame[total - len(framing.end) :] = framing.end
        _fill_checksum(frame, framing.checksum)
        # Fixed-length frames keep the start marker even when the payload covers offset 0.
        frame[: len(framing.start)] = framing.start
        _fill_checksum(frame, framing.checksum)
        return bytes(frame)

    def encode_replies(self, key: int, state: Mapping[str, Any], *, variant: str | None = None) -> list[bytes]:
        """Every frame that answers one request for reply `key` (several for an indexed reply)."""
        reply = self._replies[key]
        if reply.spec.index is None or not reply.per_frame:
            return [self.encode_reply(key, state, variant=variant)]
        variables = {target[4:]: int(value) for target, value in state.items() if target.startswith("var.")}
        expected = self.frames_expected(key, variables)
        if expected is None:
            first = next(field for field in reply.spec.fields if field.count is not None)
            expected = max(1, -(-len(_lookup(state, first.target) or ()) // reply.per_frame))
        return [self.encode_reply(key, state, variant=variant, frame_index=index) for index in range(expected)]

    def build_command(self, name: str, *, charge: bool | None, discharge: bool | None) -> bytes:
        """A complete write frame for command `name` with parameters from the desired MOSFET states."""
        command = self.definition.commands[name]
        values = {
            param: _mosfet_param(bits, charge=charge, discharge=discharge) for param, bits in command.params.items()
        }
        return self.render_command(command, values)

    def render_command(self, command: CommandSpec, values: Mapping[str, int]) -> bytes:
        """Fill a command template's placeholders and checksum."""
        frame = bytearray()
        for part in command.template():
            if isinstance(part, bytes):
                frame += part
                continue
            param, kind = part
            size = PLACEHOLDER_SIZES[kind]
            order: Any = "little" if kind.endswith("le") else "big"
            frame += (values[param] & ((1 << (8 * size)) - 1)).to_bytes(size, order)
        framing = self.definition.framing
        _fill_checksum(frame, framing.request_checksum or framing.checksum)
        return bytes(frame)

    def request_checksum_ok(self, frame: bytes) -> bool:
        """Whether a literal request frame carries a correct checksum (catches typos in definitions)."""
        framing = self.definition.framing
        spec = framing.request_checksum or framing.checksum
        if spec is None:
            return True
        start, end, at = _resolve(spec.start, spec.end, spec.at, len(frame))
        algorithm = CHECKSUMS[spec.algorithm]
        if not 0 <= start <= end <= len(frame) or at + algorithm.size > len(frame):
            return False
        return int.from_bytes(frame[at : at + algorithm.size], spec.endian) == algorithm.compute(frame[start:end])


@functools.lru_cache(maxsize=256)
def _numbered_keys(name: str, count: int) -> tuple[str, ...]:
    """``NAME_1`` .. ``NAME_count``: the extras keys of a list decoded into extras."""
    return tuple(f"{name}_{number}" for number in range(1, count + 1))


def _list_starts(definition: ProtocolDefinition, order: list[int]) -> dict[int, dict[str, int]]:
    """Per reply, where its part of each list begins when earlier replies (in poll order) fill it first."""
    starts: dict[int, dict[str, int]] = {}
    filled: dict[str, int] = {}
    for key in dict.fromkeys(order):
        reply = definition.replies.get(key)
        if reply is None or reply.index is not None:
            continue
        counts: dict[str, int] = {}
        for field in reply.fields:
            if isinstance(field.count, int):
                counts[field.target] = counts.get(field.target, 0) + field.count
        for target in counts:
            if filled.get(target):
                starts.setdefault(key, {})[target] = filled[target]
        for target, count in counts.items():
            filled[target] = filled.get(target, 0) + count
    return starts


_PERCENT_TARGETS: Final = ("soc", "soh")
_DEVICE_CACHE_SIZE: Final = 64


def _first(item: tuple[int, Any, bytes]) -> int:
    return item[0]


def _apply_layout(
    layout: _Layout, payload: bytes, out: dict[str, Any], device_fields: dict[str, Any], variables: dict[str, int]
) -> None:
    """Run one reply's compiled field table over its payload."""
    if layout.record is not None:
        values = layout.record(payload, 0)
        for index, name, scale, add in layout.plain:
            out[name] = values[index] * scale + add
        for index, sink in layout.sinks:
            sink(values[index], out, device_fields, variables)
        for index, name, cast in layout.plain_cast:
            out[name] = cast(values[index])
        if layout.plain_extras:
            extras = out.get("extras")
            if extras is None:
                extras = out["extras"] = {}
            for index, name, scale, add in layout.plain_extras:
                extras[name] = values[index] * scale + add
    for step in layout.steps:
        step(payload, out, device_fields, variables)
    if layout.shifted:
        _apply_shifted(layout.shifted, payload, out, device_fields, variables)


def _shift_offset(terms: tuple[tuple[str, int], ...], variables: Mapping[str, int]) -> int:
    """Bytes a shifted group moves by: the sum of variable × bytes per unit (DecodeError if one is unknown)."""
    offset = 0
    for name, size in terms:
        value = variables.get(name)
        if value is None:
            raise DecodeError(f"var.{name} is not known, so fields shifted by it cannot be placed")
        offset += value * size
    return offset


def _apply_shifted(
    groups: tuple[tuple[tuple[tuple[str, int], ...], _Layout], ...],
    payload: bytes,
    out: dict[str, Any],
    device_fields: dict[str, Any],
    variables: dict[str, int],
) -> None:
    """Decode each group of shifted fields from the payload as seen from its (variable) start."""
    for terms, sub in groups:
        offset = _shift_offset(terms, variables)
        if offset < 0 or len(payload) - offset < sub.min_payload:
            raise DecodeError(
                f"fields shifted by {offset} bytes need {offset + sub.min_payload} payload bytes, "
                f"frame has {len(payload)}"
            )
        _apply_layout(sub, payload[offset:], out, device_fields, variables)


def _shift_terms(field: FieldSpec) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((name[4:], size) for name, size in (field.shift or {}).items()))


def _shifted_encoder(field: FieldSpec, encoder: _EncodeStep) -> _EncodeStep:
    """Run a field's encoder on the buffer as seen from the field's (variable) start."""
    terms = _shift_terms(field)

    def encode_shifted(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        offset = sum(variables.get(name, 0) * size for name, size in terms)
        with memoryview(buffer) as view, view[offset:] as moved:
            encoder(moved, state, variables)  # type: ignore[arg-type]

    return encode_shifted


def _memoizable(fields: list[FieldSpec]) -> bool:
    """Whether a field table's result depends on its bytes alone and only sets scalars."""
    return bool(fields) and all(
        not field.variables_used()
        and field.count is None
        and field.target not in {"alarms", "balancing_cells"}
        and field.target not in LIST_TARGETS
        for field in fields
    )


def _compile_layout(
    compiled: list[tuple[FieldSpec, _Step, _EncodeStep, int]],
    min_payload: int,
    endian: str,
    where: str,
    *,
    nested: bool = False,
) -> _Layout:
    """Gather the fixed-offset scalars of one layout into one `struct` record; the rest stay steps.

    Scalars in the definition's byte order that do not overlap each other are read by one
    ``unpack_from``; fields at the same offset with the same type share one record slot. Fields with a
    `shift` form sub-layouts (one per distinct shift) compiled the same way, relative to their start.
    """
    shifted: tuple[tuple[tuple[tuple[str, int], ...], _Layout], ...] = ()
    if not nested and any(item[0].shift for item in compiled):
        groups: dict[tuple[tuple[str, int], ...], list[tuple[FieldSpec, _Step, _EncodeStep, int]]] = {}
        for item in compiled:
            if item[0].shift:
                groups.setdefault(_shift_terms(item[0]), []).append(item)
        shifted = tuple(
            (terms, _compile_layout(items, 0, endian, where, nested=True)) for terms, items in groups.items()
        )
        fixed = [item for item in compiled if not item[0].shift]
        fixed_layout = _compile_layout(fixed, min_payload, endian, where, nested=True)
        return dataclasses.replace(
            fixed_layout,
            encoders=tuple(item[2] for item in compiled),
            memo=_memoizable([item[0] for item in compiled]),
            shifted=shifted,
        )
    order = ">" if endian == "big" else "<"
    slots: list[tuple[int, Any, bytes]] = []  # (offset, field type, struct code)
    members: list[tuple[FieldSpec, int]] = []  # (field, slot index) once the record is final
    steps: list[_Step] = []
    candidates: list[tuple[FieldSpec, _Step]] = []
    for field, step, _encoder, _end in compiled:
        recordable = (
            field.count is None
            and field.type not in {"str", "u24"}
            and field.when is None
            and (field.endian or endian) == endian
        )
        if recordable:
            candidates.append((field, step))
        else:
            steps.append(step)
    taken: dict[tuple[int, str], int] = {}
    busy_until = -1
    for field, step in sorted(candidates, key=lambda item: item[0].at):
        slot_key = (field.at, field.type)
        if slot_key in taken:
            members.append((field, taken[slot_key]))
            continue
        if field.at < busy_until:
            steps.append(step)  # overlaps a different-typed slot: read it on its own
            continue
        taken[slot_key] = len(slots)
        slots.append((field.at, field.type, _STRUCT_CODES[field.type].encode()))
        members.append((field, taken[slot_key]))
        busy_until = field.at + INTEGER_SIZES[field.type]
    record = None
    plain: list[tuple[int, str, float, float]] = []
    plain_extras: list[tuple[int, str, Any, Any]] = []
    plain_cast: list[tuple[int, str, type]] = []
    sinks: list[tuple[int, _Sink]] = []
    if slots:
        layout = order
        position = 0
        for offset, _type, code in sorted(slots, key=_first):
            if offset > position:
                layout += f"{offset - position}x"
            layout += code.decode()
            position = offset + struct.calcsize(order + code.decode())
        record = struct.Struct(layout).unpack_from
        # Slots were numbered in offset order already (candidates are sorted by offset).
        for field, slot in members:
            if _is_plain(field):
                plain.append((slot, field.target, float(field.scale), float(field.add)))
            elif _plain_cast(field) is not None:
                plain_cast.append((slot, field.target, _plain_cast(field) or int))
            elif _is_plain_extra(field):
                plain_extras.append((slot, field.target[7:], _integral(field.scale), _integral(field.add)))
            else:
                sinks.append((slot, _sink(field, f"{where} ({field.target})")))
    ends = [end for *_rest, end in compiled]
    return _Layout(
        min_payload=max([min_payload, *ends]),
        record=record,
        plain=tuple(plain),
        sinks=tuple(sinks),
        plain_extras=tuple(plain_extras),
        plain_cast=tuple(plain_cast),
        steps=tuple(steps),
        encoders=tuple(item[2] for item in compiled),
        memo=_memoizable([item[0] for item in compiled]),
    )


def _mosfet_param(bits: Any, *, charge: bool | None, discharge: bool | None) -> int:
    value = 0
    if charge is True:
        value |= bits.charge_on
    elif charge is False:
        value |= bits.charge_off
    if discharge is True:
        value |= bits.discharge_on
    elif discharge is False:
        value |= bits.discharge_off
    return int(value)


def _resolve(start: int, end: int, at: int, length: int) -> tuple[int, int, int]:
    return (
        start if start >= 0 else length + start,
        end if end >= 0 else length + end,
        at if at >= 0 else length + at,
    )


def _fill_checksum(frame: bytearray, spec: Any) -> None:
    if spec is None:
        return
    algorithm = CHECKSUMS[spec.algorithm]
    start, end, at = _resolve(spec.start, spec.end, spec.at, len(frame))
    value = algorithm.compute(frame[start:end])
    frame[at : at + algorithm.size] = value.to_bytes(algorithm.size, spec.endian)


def _payload_size(reply: _CompiledReply, state: Mapping[str, Any], variables: Mapping[str, int]) -> int:
    size = reply.min_payload
    for field in reply.spec.fields:
        base = sum(variables.get(name, 0) * step for name, step in _shift_terms(field)) if field.shift else 0
        if field.type == "str" and field.size == "rest":
            text = state.get(field.target)
            size = max(size, base + field.at + len(str(text).encode("utf-8")) if text is not None else field.at)
        elif field.count is not None and not (field.target.startswith("extras.") and not field.shift):
            count = _encode_count(field, state, variables)
            stride = field.stride or field.item_size
            size = max(size, base + field.at + stride * count)
        elif field.shift:
            size = max(size, base + field.at + field.item_size)
    return size


def _encode_count(field: FieldSpec, state: Mapping[str, Any], variables: Mapping[str, int]) -> int:
    if isinstance(field.count, int):
        return field.count
    values = state.get(field.target) or ()
    if field.count == "rest":
        return len(values)
    return int(variables.get(str(field.count)[4:], len(values)))


def _conditional(field: FieldSpec, step: _Step, encoder: _EncodeStep) -> tuple[_Step, _EncodeStep]:
    """Wrap a field's steps so that they run only while its `when` condition holds."""
    condition = field.when
    assert condition is not None  # only called for conditional fields
    name = condition.var[4:]
    holds = condition.holds
    low = condition.min if condition.min is not None else -math.inf
    high = condition.max if condition.max is not None else math.inf

    def decode_when(payload: bytes, out: dict[str, Any], device: dict[str, Any], variables: dict[str, int]) -> None:
        value = variables.get(name)
        if value is not None and low <= value <= high:
            step(payload, out, device, variables)

    def encode_when(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        if holds(variables.get(name)):
            encoder(buffer, state, variables)

    return decode_when, encode_when


def _compile_field(
    field: FieldSpec, default_endian: str, where: str, index: FrameIndexSpec | None = None
) -> tuple[_Step, _EncodeStep, int]:
    """Compile one field into (decode step, encode step, bytes of payload it needs)."""
    endian = ">" if (field.endian or default_endian) == "big" else "<"
    target = field.target
    at = field.at
    if field.type == "str":
        return _compile_string(field, target, at)
    read, size = _raw_reader(field, endian)
    write = _raw_writer(field, endian)
    if field.count is not None:
        return _compile_list(field, target, at, size, endian, where, index)
    scale, add = field.scale, field.add
    absent = frozenset(field.absent)
    end = at + size

    convert = _converter(field, target, where)

    if target == "alarms" and field.codes is not None:
        codes = dict(field.codes)
        ordered = tuple(sorted(codes.items()))

        def decode_codes(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], _vars: dict[str, int]) -> None:
            alarm = codes.get(read(payload, at))
            if alarm is not None:
                out.setdefault("alarms", set()).add(alarm)

        def encode_codes(buffer: bytearray, state: Mapping[str, Any], _vars: dict[str, int]) -> None:
            # Fields sharing the byte (a MOSFET state read as "on") may have written it already: keep theirs.
            active = state.get("alarms") or ()
            if read(buffer, at) == 0:
                for raw, alarm in ordered:
                    if alarm in active:
                        write(buffer, at, raw)
                        return

        return decode_codes, encode_codes, end

    if target == "alarms":
        flags = tuple(sorted((field.flags or {}).items()))

        def decode_alarms(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], _vars: dict[str, int]) -> None:
            raw = read(payload, at)
            if raw:
                found = out.setdefault("alarms", set())
                for bit, alarm in flags:
                    if (raw >> bit) & 1:
                        found.add(alarm)

        def encode_alarms(buffer: bytearray, state: Mapping[str, Any], _vars: dict[str, int]) -> None:
            active = state.get("alarms") or ()
            raw = read(buffer, at)
            for bit, alarm in flags:
                if alarm in active:
                    raw |= 1 << bit
            write(buffer, at, raw)

        return decode_alarms, encode_alarms, end

    if target == "balancing_cells":
        first = field.cells or 1
        width = 8 * size

        def decode_cells(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], _vars: dict[str, int]) -> None:
            raw = read(payload, at)
            cells = out.setdefault("balancing_cells", set())
            while raw:
                low = raw & -raw
                cells.add(first + low.bit_length() - 1)
                raw ^= low

        def encode_cells(buffer: bytearray, state: Mapping[str, Any], _vars: dict[str, int]) -> None:
            raw = 0
            for cell in state.get("balancing_cells") or ():
                if first <= cell < first + width:
                    raw |= 1 << (cell - first)
            write(buffer, at, raw)

        return decode_cells, encode_cells, end

    store = _storer(target)
    unpack = struct.Struct(endian + _STRUCT_CODES[field.type]).unpack_from if field.type != "u24" else None
    if convert is None and unpack is not None and not absent:
        # The common case (a plain number): one unpack and one multiply-add, nothing else.
        if scale != 1.0 or add != 0.0 or target in FLOAT_TARGETS:
            # Float targets always get a float, even from an unscaled integer (stable JSON types).
            scale = float(scale)

            def decode_scaled(
                payload: bytes, out: dict[str, Any], device: dict[str, Any], vars_: dict[str, int]
            ) -> None:
                store(unpack(payload, at)[0] * scale + add, out, device, vars_)

            step: _Step = decode_scaled
        else:

            def decode_plain(
                payload: bytes, out: dict[str, Any], device: dict[str, Any], vars_: dict[str, int]
            ) -> None:
                store(unpack(payload, at)[0], out, device, vars_)

            step = decode_plain
    else:
        transform = convert or _scaler(scale, add)

        def decode_value(payload: bytes, out: dict[str, Any], device: dict[str, Any], vars_: dict[str, int]) -> None:
            raw = read(payload, at)
            if raw in absent:
                return
            value = transform(raw)
            if value is not None:
                store(value, out, device, vars_)

        step = decode_value

    def encode_value(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        value = variables.get(target[4:]) if target.startswith("var.") else _lookup(state, target)
        if field.bit is not None:
            raw = read(buffer, at)
            if value is not None and bool(value) != field.invert:
                raw |= 1 << field.bit
            write(buffer, at, raw)
            return
        if value is None:
            if absent:
                write(buffer, at, min(absent))
            return
        if field.one_of is not None:
            if bool(value) != field.invert:
                write(buffer, at, field.one_of[0])
            else:
                write(buffer, at, next(raw for raw in itertools.count() if raw not in field.one_of))
        elif field.popcount:
            write(buffer, at, (1 << int(value)) - 1)
        elif field.map is not None:
            reverse = {mapped: raw for raw, mapped in field.map.items()}
            write(buffer, at, reverse.get(value, value if isinstance(value, int) else 0))
        elif field.version is not None:
            write(buffer, at, _version_raw(field.version, str(value)))
        elif field.date is not None:
            write(buffer, at, _pack_date(field, value))
        else:
            write(buffer, at, _clamp_raw(field, (float(value) - add) / scale))

    return step, encode_value, end


_Sink = Callable[[Any, dict[str, Any], dict[str, Any], dict[str, int]], None]


def _is_plain(field: FieldSpec) -> bool:
    """A number that goes straight into a snapshot field after scale and add."""
    return (
        field.target in FLOAT_TARGETS
        and not field.absent
        and field.bit is None
        and not field.popcount
        and field.map is None
        and field.version is None
        and field.date is None
        and field.type != "f32"
    )


def _is_plain_extra(field: FieldSpec) -> bool:
    """An integer that goes into extras after scale and add, with no other transform."""
    return (
        field.target.startswith("extras.")
        and not field.absent
        and field.bit is None
        and not field.popcount
        and field.map is None
        and field.version is None
        and field.date is None
        and field.type != "f32"
    )


def _plain_cast(field: FieldSpec) -> type | None:
    """`bool` or `int` for an unscaled flag or counter that needs nothing but that cast, else None."""
    if (
        field.absent
        or field.one_of is not None
        or field.bit is not None
        or field.invert
        or field.popcount
        or field.map is not None
        or field.version is not None
        or field.date is not None
        or field.scale != 1.0
        or field.add != 0.0
        or field.type == "f32"
    ):
        return None
    if field.target in BOOL_TARGETS:
        return bool
    if field.target in INT_TARGETS:
        return int
    return None


def _integral(value: float) -> int | float:
    """`value` as an int when it is whole, so that unscaled integer fields decode to ints."""
    return int(value) if float(value).is_integer() else value


def _sink(field: FieldSpec, where: str) -> _Sink:
    """What to do with one raw scalar read by the record (everything but plain numbers)."""
    target = field.target
    if target == "alarms" and field.codes is not None:
        codes = dict(field.codes)

        def codes_sink(raw: Any, out: dict[str, Any], _device: dict[str, Any], _vars: dict[str, int]) -> None:
            alarm = codes.get(raw)
            if alarm is not None:
                out.setdefault("alarms", set()).add(alarm)

        return codes_sink
    if target == "alarms":
        flags = tuple(sorted((field.flags or {}).items()))

        def alarms_sink(raw: Any, out: dict[str, Any], _device: dict[str, Any], _vars: dict[str, int]) -> None:
            if raw:
                found = out.setdefault("alarms", set())
                for bit, alarm in flags:
                    if (raw >> bit) & 1:
                        found.add(alarm)

        return alarms_sink
    if target == "balancing_cells":
        first = field.cells or 1

        def cells_sink(raw: Any, out: dict[str, Any], _device: dict[str, Any], _vars: dict[str, int]) -> None:
            cells = out.setdefault("balancing_cells", set())
            while raw:
                low = raw & -raw
                cells.add(first + low.bit_length() - 1)
                raw ^= low

        return cells_sink
    absent = frozenset(field.absent)
    transform = _converter(field, target, where) or _scaler(field.scale, field.add)
    store = _storer(target)

    if not absent:
        # The usual case: no "not present" markers to test for on every poll.
        def present_sink(raw: Any, out: dict[str, Any], device: dict[str, Any], variables: dict[str, int]) -> None:
            value = transform(raw)
            if value is not None:
                store(value, out, device, variables)

        return present_sink

    def value_sink(raw: Any, out: dict[str, Any], device: dict[str, Any], variables: dict[str, int]) -> None:
        if raw in absent:
            return
        value = transform(raw)
        if value is not None:
            store(value, out, device, variables)

    return value_sink


def _scaler(scale: float, add: float) -> Callable[[Any], Any]:
    if scale == 1.0 and add == 0.0:
        return lambda raw: raw
    return lambda raw: raw * scale + add


def _converter(field: FieldSpec, target: str, where: str) -> Callable[[Any], Any] | None:
    """The raw → value transform of a field, chosen once; None for a plain scaled number."""
    scale, add, invert = field.scale, field.add, field.invert
    if field.bit is not None:
        bit = field.bit
        return lambda raw: bool((raw >> bit) & 1) != invert
    if field.one_of is not None:
        accepted = frozenset(field.one_of)
        return lambda raw: (raw in accepted) != invert
    if field.popcount:
        return lambda raw: int(raw).bit_count()
    if field.map is not None:
        mapping = field.map
        return lambda raw: mapping.get(raw, raw)
    if field.version is not None:
        style = field.version
        return lambda raw: _version_text(style, raw)
    if field.date is not None:
        return lambda raw: _packed_date(field, raw, where)
    scaled = _scaler(scale, add)
    if target in BOOL_TARGETS:
        return lambda raw: bool(scaled(raw)) != invert
    if target in INT_TARGETS or target.startswith("var."):
        return lambda raw: int(scaled(raw))
    if field.type == "f32":

        def finite(raw: Any) -> float:
            value = float(scaled(raw))
            if not math.isfinite(value):
                raise DecodeError(f"{where}: value is not a finite number")
            return value

        return finite
    return None


_Store = Callable[[Any, dict[str, Any], dict[str, Any], dict[str, int]], None]


def _storer(target: str) -> _Store:
    """Where a decoded value goes, chosen once per field."""
    prefix, _, name = target.partition(".")
    if prefix == "var":

        def to_var(value: Any, _out: dict[str, Any], _device: dict[str, Any], variables: dict[str, int]) -> None:
            variables[name] = int(value)

        return to_var
    if prefix == "device":

        def to_device(value: Any, _out: dict[str, Any], device: dict[str, Any], _vars: dict[str, int]) -> None:
            device[name] = value

        return to_device
    if prefix == "extras":

        def to_extras(value: Any, out: dict[str, Any], _device: dict[str, Any], _vars: dict[str, int]) -> None:
            out.setdefault("extras", {})[name] = value

        return to_extras

    def to_snapshot(value: Any, out: dict[str, Any], _device: dict[str, Any], _vars: dict[str, int]) -> None:
        out[target] = value

    return to_snapshot


def _lookup(state: Mapping[str, Any], target: str) -> Any:
    if target in state:
        return state[target]
    prefix, _, name = target.partition(".")
    nested = state.get(prefix)
    if isinstance(nested, Mapping):
        return nested.get(name)
    return None


def _store(target: str, value: Any, out: dict[str, Any], device: dict[str, Any], variables: dict[str, int]) -> None:
    if value is None:
        return
    if target.startswith("var."):
        variables[target[4:]] = int(value)
    elif target.startswith("device."):
        device[target[7:]] = value
    elif target.startswith("extras."):
        out.setdefault("extras", {})[target[7:]] = value
    else:
        out[target] = value


def _packed_date(field: FieldSpec, raw: int, where: str) -> dt.date | None:
    spec = field.date
    assert spec is not None  # only called for date fields
    if raw == 0:
        return None
    year = _bits(raw, *spec.year) + spec.year_add
    month = _bits(raw, *spec.month)
    day = _bits(raw, *spec.day)
    try:
        return dt.date(year, month, day)
    except ValueError:
        # A garbage date is not worth failing the whole poll: report it as unknown.
        return None


def _pack_date(field: FieldSpec, value: Any) -> int:
    spec = field.date
    assert spec is not None
    date = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    return ((date.year - spec.year_add) << spec.year[1]) | (date.month << spec.month[1]) | (date.day << spec.day[1])


def _compile_string(field: FieldSpec, target: str, at: int) -> tuple[_Step, _EncodeStep, int]:
    size = field.size
    fixed = isinstance(size, int)
    end = at + size if isinstance(size, int) else at
    date_format = field.date_format
    to_var = target.startswith("var.")

    name = target[4:]
    store = _storer(target)
    # Identity strings repeat on every poll (the device-info frame is re-decoded each time): parse each
    # distinct byte string once. Bounded, and a race between threads only recomputes a value.
    cache: dict[bytes, Any] = {}

    def parse(raw: bytes) -> Any:
        text = raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
        if not text.isprintable():
            text = "".join(char for char in text if char.isprintable())
        if not text:
            return None
        if to_var:
            number = _LEADING_NUMBER.match(text)
            return int(number.group()) if number is not None else None
        if date_format is not None:
            try:
                return dt.datetime.strptime(text, date_format).date()
            except ValueError:
                return None
        return text

    def decode_string(payload: bytes, out: dict[str, Any], device: dict[str, Any], variables: dict[str, int]) -> None:
        raw = payload[at : at + size] if isinstance(size, int) else payload[at:]
        try:
            value = cache[raw]
        except KeyError:
            value = parse(raw)
            if len(cache) >= _STRING_CACHE_SIZE:
                cache.clear()
            cache[raw] = value
        if value is None:
            return
        if to_var:
            variables[name] = value
        else:
            store(value, out, device, variables)

    def encode_string(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        value = variables.get(target[4:]) if to_var else _lookup(state, target)
        if value is None:
            return
        if to_var and any(buffer[at : at + len(str(value))]):
            return  # the text another field wrote there already starts with this number
        if date_format is not None and isinstance(value, dt.date):
            value = value.strftime(date_format)
        data = str(value).encode("ascii", errors="replace")
        if fixed:
            data = data[: int(size)]  # type: ignore[arg-type]
        buffer[at : at + len(data)] = data

    return decode_string, encode_string, end


def _compile_list(
    field: FieldSpec,
    target: str,
    at: int,
    size: int,
    endian: str,
    where: str,
    index: FrameIndexSpec | None = None,
) -> tuple[_Step, _EncodeStep, int]:
    scale, add = field.scale, field.add
    absent = frozenset(field.absent)
    stride = field.stride or size
    code = _STRUCT_CODES.get(field.type)
    if code is None or stride != size:
        raise ValueError(f"{where}: lists need a byte-aligned integer type without a custom stride")
    count = field.count
    limit_var = field.limit[4:] if field.limit else None
    cache: dict[int, Callable[[bytes, int], tuple[Any, ...]]] = {}

    def unpacker(n: int) -> Callable[[bytes, int], tuple[Any, ...]]:
        found = cache.get(n)
        if found is None:
            found = cache[n] = struct.Struct(f"{endian}{n}{code}").unpack_from
        return found

    count_var = count[4:] if isinstance(count, str) and count.startswith("var.") else None
    fixed_count = count if isinstance(count, int) else None
    end = at + size * fixed_count if fixed_count is not None else at
    identity = scale == 1.0 and add == 0.0
    extras_name = target[7:] if target.startswith("extras.") else None
    as_float = extras_name is None
    index_at = index.at if index is not None else -1
    index_base = index.base if index is not None else 0
    end = max(end, index_at + 1)

    def read_values(payload: bytes, n: int) -> list[Any]:
        if at + n * size > len(payload):
            raise DecodeError(f"{where}: {n} values need {at + n * size} payload bytes, frame has {len(payload)}")
        raw = unpacker(n)(payload, at)
        if absent:
            raw = tuple(value for value in raw if value not in absent)
        if identity:
            # Snapshot lists hold floats even when the raw unit needs no scaling (stable JSON types).
            return list(map(float, raw)) if as_float else list(raw)
        return [value * scale + add for value in raw]

    if index is None and fixed_count is not None and extras_name is None:
        # The common table (cell voltages, sensors): one precompiled unpack; the layout's min_payload
        # already guarantees the bytes are there.
        unpack_fixed = struct.Struct(f"{endian}{fixed_count}{code}").unpack_from

        def decode_single(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], variables: dict[str, int]) -> None:
            # One sensor at its own offset (JK's temperatures 3-5): no tuple work.
            (value,) = unpack_fixed(payload, at)
            if value in absent or (limit_var is not None and variables.get(limit_var, 1) < 1):
                return
            items = out.get(target)
            if items is None:
                items = out[target] = []
            items.append(float(value) if identity else value * scale + add)

        def decode_fixed(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], variables: dict[str, int]) -> None:
            raw = unpack_fixed(payload, at)
            if limit_var is not None:
                limit = variables.get(limit_var)
                if limit is not None and limit < fixed_count:
                    raw = raw[: max(limit, 0)]
            if absent:
                raw = tuple([value for value in raw if value not in absent])
                if not raw:
                    return
            items = out.get(target)
            if items is None:
                items = out[target] = []
            if identity:
                items.extend(map(float, raw))
            else:
                items.extend([value * scale + add for value in raw])

        step: _Step = decode_single if fixed_count == 1 else decode_fixed
    elif index is not None:
        assert fixed_count is not None  # ReplySpec validation

        def decode_positioned(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], _vars: dict[str, int]) -> None:
            number = payload[index_at] - index_base
            if number < 0:
                raise DecodeError(f"{where}: frame number {payload[index_at]} is below {index_base}")
            first = number * fixed_count
            placed = out.setdefault(_POSITIONED, {}).setdefault(target, {})
            for offset, value in enumerate(read_values(payload, fixed_count)):
                placed[first + offset] = value

        step = decode_positioned
    else:

        def decode_list(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], variables: dict[str, int]) -> None:
            if fixed_count is not None:
                n = fixed_count
            elif count_var is not None:
                if count_var not in variables:
                    raise DecodeError(f"{where}: var.{count_var} is not known (its reply was not received)")
                n = variables[count_var]
            else:
                n = max(0, (len(payload) - at) // size)
            if limit_var is not None and limit_var in variables:
                n = min(n, variables[limit_var])
            if extras_name is not None:
                items = out.setdefault(_EXTRA_LISTS, {}).setdefault(extras_name, [])
            else:
                items = out.setdefault(target, [])
            if n > 0:
                items.extend(read_values(payload, n))

        step = decode_list

    writer = struct.Struct(endian + code).pack_into
    cursor = "@" + target

    def encode_list(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        values = list(_lookup(state, target) or ())
        # Indexed replies: the frame's slice. Otherwise several fields may fill one list (temperatures in two
        # places, cells 9-16 after 1-8): continue where the last one stopped.
        start = variables.get(_FRAME, 0) * (fixed_count or 0) if index is not None else variables.get(cursor, 0)
        n = fixed_count if fixed_count is not None else max(0, len(values) - start)
        used = min(n, variables[limit_var]) if limit_var is not None and limit_var in variables else n
        for offset in range(n):
            position = start + offset
            if offset < used and position < len(values):
                raw = _clamp_raw(field, (float(values[position]) - add) / scale)
            elif absent:
                raw = min(absent)
            else:
                raw = 0
            writer(buffer, at + offset * size, raw)
        if index is None:
            variables[cursor] = start + used

    return step, encode_list, end


def compile_definition(definition: ProtocolDefinition) -> CompiledProtocol:
    """Compile a definition (do this once; the result is immutable and thread-safe to share)."""
    compiled = CompiledProtocol(definition)
    for request in definition.requests:
        if not compiled.request_checksum_ok(request.frame):
            raise DefinitionError(
                "checksum of the request frame is wrong",
                source=definition.source,
                field=f"requests.{request.name}.frame",
            )
    return compiled


def decode_hex_frames(compiled: CompiledProtocol, texts: Sequence[str]) -> list[Frame]:
    """Parse hex strings (spaces allowed) into checked frames, naming the bad argument on error."""
    frames = []
    for index, text in enumerate(texts, start=1):
        try:
            raw = parse_hex(text)
        except ValueError as exc:
            raise FrameError(f"frame {index}: {exc}") from None
        try:
            frames.append(compiled.check_frame(raw))
        except FrameError as exc:
            raise FrameError(f"frame {index}: {exc}") from None
    return frames
