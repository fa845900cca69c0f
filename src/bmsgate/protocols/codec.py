"""The compiler: turns a validated definition into fast decode (and encode) functions, once.

Every field becomes a small closure around a precompiled `struct.Struct`; decoding a reply is a loop
over those closures writing into a plain dict that becomes one `BatterySnapshot`. The same field
tables run backwards (`encode_reply`), which is how the simulator speaks every protocol, including
user-supplied ones, without protocol-specific code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
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
    PLACEHOLDER_SIZES,
    CommandSpec,
    FieldSpec,
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
class _CompiledReply:
    key: int
    spec: ReplySpec
    min_payload: int
    steps: tuple[_Step, ...]
    encoders: tuple[_EncodeStep, ...]


class CompiledProtocol:
    """A definition compiled for fast decoding, frame checking, request building and encoding."""

    def __init__(self, definition: ProtocolDefinition) -> None:
        self.definition = definition
        self.name = definition.name
        framing = definition.framing
        self.checker = FrameChecker(framing)
        self._payload_offset = framing.payload_offset
        self._trailer = framing.trailer_size
        self._replies = {key: self._compile_reply(key, spec) for key, spec in definition.replies.items()}
        order = [request.reply for request in definition.requests if request.reply is not None]
        self._order = {key: index for index, key in enumerate(order)}
        self._keyed = framing.key is not None

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
    ) -> BatterySnapshot:
        """Decode the reply frames of one poll into one snapshot.

        Frames are processed in the definition's request order (so values such as a cell count
        decoded from one reply are available to the next); unknown reply types are ignored.

        Raises:
            FrameError: a raw frame fails its length/marker/checksum check.
            DecodeError: a frame is too short for its fields, or values are impossible.
            ProtocolError: the BMS flagged an error in a reply's status byte.
        """
        checked: list[Frame] = []
        for item in frames:
            frame = item if isinstance(item, Frame) else self.checker.check(bytes(item))
            if not frame.status_ok:
                raise ProtocolError(
                    f"{self.name}: the BMS answered reply {frame.key:#04x} with an error status"
                    if frame.key is not None
                    else f"{self.name}: the BMS answered with an error status"
                )
            checked.append(frame)
        if len(checked) > 1:
            order = self._order
            checked.sort(key=lambda frame: order.get(frame.key, len(order)) if frame.key is not None else 0)
        out: dict[str, Any] = {}
        device_fields: dict[str, Any] = {}
        variables: dict[str, int] = {}
        decoded_any = False
        offset, trailer = self._payload_offset, self._trailer
        for frame in checked:
            if self._keyed:
                reply = self._replies.get(frame.key) if frame.key is not None else None
            else:
                reply = next(iter(self._replies.values()), None)
            if reply is None:
                continue
            raw = frame.raw
            payload = raw[offset : len(raw) - trailer] if trailer else raw[offset:]
            if len(payload) < reply.min_payload:
                raise DecodeError(
                    f"{self.name}: reply {reply.spec.name} has {len(payload)} payload bytes, "
                    f"needs at least {reply.min_payload}"
                )
            for step in reply.steps:
                step(payload, out, device_fields, variables)
            decoded_any = True
        if not decoded_any:
            raise DecodeError(f"{self.name}: none of the frames is a reply this protocol decodes")
        return self._build_snapshot(out, device_fields, battery_id, timestamp, device)

    def _build_snapshot(
        self,
        out: dict[str, Any],
        device_fields: dict[str, Any],
        battery_id: str,
        timestamp: float | None,
        device: DeviceInfo | None,
    ) -> BatterySnapshot:
        extras = out.pop("extras", None)
        for name in ("cell_voltages", "temperatures"):
            if name in out:
                out[name] = tuple(out[name])
        if "balancing_cells" in out:
            out["balancing_cells"] = tuple(sorted(out["balancing_cells"]))
        if "alarms" in out:
            out["alarms"] = frozenset(out["alarms"])
        if device_fields and self.definition.manufacturer:
            device_fields.setdefault("manufacturer", self.definition.manufacturer)
        info = DeviceInfo(**device_fields) if device_fields else None
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
        steps: list[_Step] = []
        encoders: list[_EncodeStep] = []
        fixed_end = spec.min_payload
        for index, field in enumerate(spec.fields):
            where = f"{self.definition.source}: replies[{key:#04x}].fields[{index}] ({field.target})"
            step, encoder, end = _compile_field(field, self.definition.endian, where)
            steps.append(step)
            encoders.append(encoder)
            fixed_end = max(fixed_end, end)
        return _CompiledReply(key, spec, fixed_end, tuple(steps), tuple(encoders))

    # -- encoding (simulator, tests) ------------------------------------------------------------------

    def encode_reply(self, key: int, state: Mapping[str, Any], *, status_ok: bool = True) -> bytes:
        """Build a complete, valid reply frame of type `key` from snapshot-like `state`.

        `state` maps targets (``voltage``, ``cell_voltages``, ``device.model``, ``extras.x``,
        ``var.cell_count``, ``alarms`` as a set of `Alarm`, ``balancing_cells`` as cell numbers) to
        values; missing values encode as zero / absent.
        """
        reply = self._replies[key]
        framing = self.definition.framing
        variables: dict[str, int] = {}
        for field in reply.spec.fields:
            if isinstance(field.count, str) and field.count.startswith("var."):
                values = state.get(field.target) or ()
                variables.setdefault(field.count[4:], len(values))
        for target, value in state.items():
            if target.startswith("var."):
                variables[target[4:]] = int(value)
        payload = bytearray(_payload_size(reply, state, variables))
        for encoder in reply.encoders:
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
        if field.type == "str" and field.size == "rest":
            text = state.get(field.target)
            size = max(size, field.at + len(str(text).encode("utf-8")) if text is not None else field.at)
        elif field.count is not None:
            count = _encode_count(field, state, variables)
            stride = field.stride or field.item_size
            size = max(size, field.at + stride * count)
    return size


def _encode_count(field: FieldSpec, state: Mapping[str, Any], variables: Mapping[str, int]) -> int:
    if isinstance(field.count, int):
        return field.count
    values = state.get(field.target) or ()
    if field.count == "rest":
        return len(values)
    return int(variables.get(str(field.count)[4:], len(values)))


def _compile_field(field: FieldSpec, default_endian: str, where: str) -> tuple[_Step, _EncodeStep, int]:
    """Compile one field into (decode step, encode step, bytes of payload it needs)."""
    endian = ">" if (field.endian or default_endian) == "big" else "<"
    target = field.target
    at = field.at
    if field.type == "str":
        return _compile_string(field, target, at)
    read, size = _raw_reader(field, endian)
    write = _raw_writer(field, endian)
    if field.count is not None:
        return _compile_list(field, target, at, size, endian, where)
    scale, add = field.scale, field.add
    absent = frozenset(field.absent)
    end = at + size

    def convert(raw: Any) -> Any:
        if raw in absent:
            return None
        if field.bit is not None:
            flag = bool((raw >> field.bit) & 1)
            return flag != field.invert
        if field.popcount:
            return int(raw).bit_count()
        if field.map is not None:
            return field.map.get(raw, raw)
        if field.version is not None:
            return _version_text(field.version, raw)
        if field.date is not None:
            return _packed_date(field, raw, where)
        value = raw * scale + add if (scale != 1.0 or add != 0.0) else raw
        if target in BOOL_TARGETS:
            return bool(value) != field.invert
        if target in INT_TARGETS or target.startswith("var."):
            return int(value)
        if target in FLOAT_TARGETS:
            value = float(value)
            if not math.isfinite(value):
                raise DecodeError(f"{where}: value is not a finite number")
        return value

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

    simple = (
        not absent
        and field.bit is None
        and not field.popcount
        and field.map is None
        and field.version is None
        and field.date is None
        and target in FLOAT_TARGETS
    )
    if simple:
        unpack = struct.Struct(endian + _STRUCT_CODES[field.type]).unpack_from if field.type != "u24" else None
        if unpack is not None and (scale != 1.0 or add != 0.0):

            def decode_scaled(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], _vars: dict[str, int]) -> None:
                out[target] = unpack(payload, at)[0] * scale + add

            step: _Step = decode_scaled
        else:

            def decode_plain(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], _vars: dict[str, int]) -> None:
                out[target] = convert(read(payload, at))

            step = decode_plain
    else:

        def decode_value(
            payload: bytes, out: dict[str, Any], device: dict[str, Any], variables: dict[str, int]
        ) -> None:
            value = convert(read(payload, at))
            _store(target, value, out, device, variables)

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
        if field.popcount:
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

    def decode_string(payload: bytes, out: dict[str, Any], device: dict[str, Any], variables: dict[str, int]) -> None:
        raw = payload[at : at + size] if isinstance(size, int) else payload[at:]
        text = raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
        text = "".join(char for char in text if char.isprintable())
        if not text:
            return
        value: Any = text
        if date_format is not None:
            try:
                value = dt.datetime.strptime(text, date_format).date()
            except ValueError:
                return
        _store(target, value, out, device, variables)

    def encode_string(buffer: bytearray, state: Mapping[str, Any], _vars: dict[str, int]) -> None:
        value = _lookup(state, target)
        if value is None:
            return
        if date_format is not None and isinstance(value, dt.date):
            value = value.strftime(date_format)
        data = str(value).encode("ascii", errors="replace")
        if fixed:
            data = data[: int(size)]  # type: ignore[arg-type]
        buffer[at : at + len(data)] = data

    return decode_string, encode_string, end


def _compile_list(
    field: FieldSpec, target: str, at: int, size: int, endian: str, where: str
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
        if n <= 0:
            out.setdefault(target, [])
            return
        if at + n * size > len(payload):
            raise DecodeError(f"{where}: {n} values need {at + n * size} payload bytes, frame has {len(payload)}")
        raw = unpacker(n)(payload, at)
        items = out.setdefault(target, [])
        if absent:
            raw = tuple(value for value in raw if value not in absent)
        if identity:
            items.extend(raw)
        else:
            items.extend([value * scale + add for value in raw])

    writer = struct.Struct(endian + code).pack_into

    def encode_list(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        values = list(state.get(target) or ())
        n = fixed_count if fixed_count is not None else len(values)
        for index in range(n):
            if index < len(values):
                raw = _clamp_raw(field, (float(values[index]) - add) / scale)
            elif absent:
                raw = min(absent)
            else:
                raw = 0
            writer(buffer, at + index * size, raw)

    return decode_list, encode_list, end


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
