"""Compiling: a validated definition's field tables → `Layout` objects, once per definition.

Every fixed-offset scalar of a layout is read by one precompiled ``struct`` record; each field becomes
a decode step (or a record slot with its transform) and an encode step, and each finished layout gets
its generated decode function (`bmsgate.protocols.codegen`). The transforms themselves live in
`bmsgate.protocols.transforms`.

Why one long module: each field's decode step, encode step and record slot are compiled side by side from
one field (their offsets, counts and limits must agree), and each layout is gathered from them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from operator import mul, truediv
from typing import Any, Final, Literal

from bmsgate.errors import DecodeError
from bmsgate.model import SET_FIELDS
from bmsgate.protocols.codegen import generate_layout
from bmsgate.protocols.decode import EXTRA_LISTS, POSITIONED, Layout, MemoResult, Shifted, apply_shifted, decode_fresh
from bmsgate.protocols.definition import INTEGER_SIZES, FieldSpec, FrameIndexSpec, ReplySpec
from bmsgate.protocols.encodegen import generate_encoder
from bmsgate.protocols.memo import BoundedMemo
from bmsgate.protocols.transforms import (
    STRUCT_CODES,
    EncodeStep,
    Sink,
    Step,
    When,
    clamp_raw,
    exact_divisor,
    linear_form,
    lookup,
    raw_reader,
    raw_writer,
    scalar_encoder,
    scalar_sink,
    storer,
    value_transform,
)

__all__ = ["FRAME", "CompiledReply", "compile_reply", "shift_terms"]

FRAME: Final = "#frame"
"""Encoder variable: the number of the frame being built (indexed replies)."""
_LEADING_NUMBER: Final = re.compile(r"\d+")
# Distinct frames of one memoized layout: one device-info frame per battery speaking the protocol.
_LAYOUT_MEMO_SIZE: Final = 16
# Distinct byte strings of one string field (a name, a serial number) across batteries and variants.
_STRING_MEMO_SIZE: Final = 32
# Distinct list lengths of one variable-length list (cell counts): a handful per installation.
_UNPACKER_MEMO_SIZE: Final = 64

_Compiled = tuple[FieldSpec, Step, EncodeStep, int]
"""A field with its decode step, encode step and the payload bytes it needs."""


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledReply:
    """One reply type of a definition, compiled."""

    key: int
    spec: ReplySpec
    default: Layout
    """The layout of a definition without variants (fields without a `variants` list)."""
    layouts: dict[str, Layout]
    """Per layout name when the definition has variants (empty otherwise)."""
    per_frame: int = 0
    """Items each frame of an indexed reply carries (its first list's count)."""
    frames_var: str | None = None
    """The variable whose value ÷ per_frame says how many frames answer one request."""
    limits: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    """Per list of an indexed reply: the variable holding its full length (None: as many as arrive)."""
    count_vars: tuple[tuple[str, str], ...] = ()
    """(variable without ``var.``, list target) of each list a variable counts: an encode sets it, unscanned."""
    sizing_fields: tuple[FieldSpec, ...] = ()
    """The fields that can make an encoded payload longer than `min_payload` (an encode sizes over these)."""
    payload_encoders: Mapping[str | None, EncodeStep] = dataclasses.field(default_factory=dict)
    """Per layout name (None: the default layout): its generated encoder, which writes into a zeroed payload
    what the layout's `encoders` write one by one, the index byte of an indexed reply included."""

    @property
    def encoders(self) -> tuple[EncodeStep, ...]:
        """Encode steps of the default layout."""
        return self.default.encoders

    @property
    def min_payload(self) -> int:
        """Payload bytes the widest layout needs."""
        return max([self.default.min_payload, *(layout.min_payload for layout in self.layouts.values())])


def compile_reply(
    key: int,
    spec: ReplySpec,
    *,
    endian: str,
    source: str,
    variant_names: tuple[str, ...],
    payload_slice: tuple[int, int],
) -> CompiledReply:
    """Compile one reply's field table into its layouts (`payload_slice`: frame header and trailer sizes)."""
    compiled: list[_Compiled] = []
    per_frame, frames_var = 0, None
    limits: dict[str, str | None] = {}
    for index, field in enumerate(spec.fields):
        where = f"{source}: replies[{key:#04x}].fields[{index}] ({field.target})"
        step, encoder, end = _compile_field(field, endian, where, spec.index)
        if field.when is not None:
            step, encoder = _conditional(field, step, encoder, end, where)
            end = 0  # checked by the step itself (see When.end)
        if field.shift:
            encoder = _shifted_encoder(field, encoder)
        compiled.append((field, step, encoder, end))
        if spec.index is not None and field.count is not None:
            limits[field.target] = field.limit[4:] if field.limit else None
            if not per_frame and isinstance(field.count, int):
                per_frame, frames_var = field.count, field.limit[4:] if field.limit else None
    where = f"{source}: replies[{key:#04x}]"
    order = ">" if endian == "big" else "<"
    numbering = None
    if spec.index is not None:
        numbering = (spec.index.at, spec.index.base, per_frame if spec.index.numbers == "items" else 1)
    layouts: dict[str, Layout] = {}
    payload_encoders: dict[str | None, EncodeStep] = {}
    for name in variant_names:
        chosen = [item for item in compiled if item[0].variants is None or name in item[0].variants]
        layout = _compile_layout(chosen, spec.min_payload, endian, where, indexed=spec.index is not None)
        layouts[name] = _with_memo(layout, chosen, payload_slice)
        payload_encoders[name] = generate_encoder([(item[0], item[2]) for item in chosen], order, numbering)
    common = [item for item in compiled if item[0].variants is None]
    layout = _compile_layout(common, spec.min_payload, endian, where, indexed=spec.index is not None)
    default = _with_memo(layout, common, payload_slice)
    payload_encoders[None] = generate_encoder([(item[0], item[2]) for item in common], order, numbering)
    count_vars = tuple((str(f.count)[4:], f.target) for f in spec.fields if str(f.count).startswith("var."))
    sizing = tuple(f for f in spec.fields if f.count is not None or f.shift or f.when is not None or f.size == "rest")
    return CompiledReply(
        key, spec, default, layouts, per_frame, frames_var, limits, count_vars, sizing, payload_encoders
    )


def shift_terms(field: FieldSpec) -> tuple[tuple[str, int], ...]:
    """(variable, bytes per unit) pairs a field's position moves by, in a stable order."""
    return tuple(sorted((name[4:], size) for name, size in (field.shift or {}).items()))


def _shifted_encoder(field: FieldSpec, encoder: EncodeStep) -> EncodeStep:
    """Run a field's encoder on the buffer as seen from the field's (variable) start."""
    terms = shift_terms(field)

    def encode_shifted(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        offset = sum(variables.get(name, 0) * size for name, size in terms)
        with memoryview(buffer) as view, view[offset:] as moved:
            encoder(moved, state, variables)  # type: ignore[arg-type]

    return encode_shifted


def _memoizable(fields: list[FieldSpec]) -> bool:
    """Whether a field table's result depends on its bytes alone and only sets scalars."""
    return bool(fields) and all(
        not field.variables_used() and field.count is None and field.target not in SET_FIELDS for field in fields
    )


def _with_memo(layout: Layout, compiled: list[_Compiled], payload_slice: tuple[int, int]) -> Layout:
    """The layout with a memo of whole frames when its result depends on the frame's bytes alone.

    Keyed by the frame, not the payload: a frame the client re-sends from its connection cache is the
    same bytes object every poll, whose hash Python keeps, so a hit costs no hashing at all.
    """
    if not _memoizable([item[0] for item in compiled]):
        return layout
    start, trailer = payload_slice

    def decode_frame(raw: bytes) -> MemoResult:
        return decode_fresh(layout, raw[start : len(raw) - trailer])

    return dataclasses.replace(layout, memo=BoundedMemo(decode_frame, _LAYOUT_MEMO_SIZE))


def _compile_layout(
    compiled: list[_Compiled], min_payload: int, endian: str, where: str, *, nested: bool = False, indexed: bool = False
) -> Layout:
    """Gather the fixed-offset scalars of one layout into one `struct` record; the rest stay steps.

    Scalars in the definition's byte order that do not overlap each other are read by one
    ``unpack_from``; fields at the same offset with the same type share one record slot. Fields with a
    `shift` form sub-layouts (one per distinct shift) compiled the same way, relative to their start.
    """
    if not nested and any(item[0].shift for item in compiled):
        groups: dict[tuple[tuple[str, int], ...], list[_Compiled]] = {}
        for item in compiled:
            if item[0].shift:
                groups.setdefault(shift_terms(item[0]), []).append(item)
        shifted: Shifted = tuple(
            (terms, _compile_layout(items, 0, endian, where, nested=True, indexed=indexed))
            for terms, items in groups.items()
        )
        fixed = [item for item in compiled if not item[0].shift]
        fixed_layout = _compile_layout(fixed, min_payload, endian, where, nested=True, indexed=indexed)
        return _generated(
            dataclasses.replace(fixed_layout, encoders=tuple(item[2] for item in compiled), shifted=shifted), where
        )
    order = ">" if endian == "big" else "<"
    slots: list[tuple[int, str]] = []  # (offset, struct code)
    members: list[tuple[FieldSpec, int]] = []  # (field, slot index) once the record is final
    steps: list[Step] = []
    step_fields: list[FieldSpec | None] = []  # the list a step reads, for the generator to inline
    candidates: list[tuple[FieldSpec, Step]] = []
    for field, step, _encoder, _end in compiled:
        recordable = (
            field.count is None
            and field.type not in {"str", "u24", "s24"}
            and field.when is None
            and (field.endian or endian) == endian
        )
        if recordable:
            candidates.append((field, step))
        else:
            steps.append(step)
            step_fields.append(field if field.count is not None and not indexed else None)
    taken: dict[tuple[int, str], int] = {}
    busy_until = -1
    for field, step in sorted(candidates, key=lambda item: item[0].at):
        slot_key = (field.at, field.type)
        if slot_key in taken:
            members.append((field, taken[slot_key]))
            continue
        if field.at < busy_until:
            steps.append(step)  # overlaps a different-typed slot: read it on its own
            step_fields.append(None)
            continue
        taken[slot_key] = len(slots)
        slots.append((field.at, STRUCT_CODES[field.type]))
        members.append((field, taken[slot_key]))
        busy_until = field.at + INTEGER_SIZES[field.type]
    record = None
    numbers: list[tuple[int, str, float | int, float | int, bool]] = []
    casts: list[tuple[int, str, type]] = []
    extras: list[tuple[int, str, Any, Any, bool]] = []
    sinks: list[tuple[int, Sink]] = []
    sink_fields: list[FieldSpec] = []
    if slots:
        text = order
        position = 0
        for offset, code in slots:  # already in offset order: candidates are sorted by offset
            if offset > position:
                text += f"{offset - position}x"
            text += code
            position = offset + struct.calcsize(order + code)
        record = struct.Struct(text).unpack_from
        for field, slot in members:
            linear = linear_form(field)
            if linear is None:
                sinks.append((slot, scalar_sink(field, f"{where} ({field.target})")))
                sink_fields.append(field)
            elif linear.kind == "number":
                scale, add = (linear.scale, linear.add) if linear.divide else (float(linear.scale), float(linear.add))
                numbers.append((slot, field.target, scale, add, linear.divide))
            elif linear.kind == "cast":
                casts.append((slot, field.target, linear.cast))
            else:
                extras.append((slot, field.target[7:], linear.scale, linear.add, linear.divide))
    layout = Layout(
        min_payload=max([min_payload, *(end for *_rest, end in compiled)]),
        record=record,
        numbers=tuple(numbers),
        casts=tuple(casts),
        extras=tuple(extras),
        sinks=tuple(sinks),
        steps=tuple(steps),
        encoders=tuple(item[2] for item in compiled),
        sink_fields=tuple(sink_fields),
        step_fields=tuple(step_fields),
        byte_order=order,
    )
    return _generated(layout, where)


def _generated(layout: Layout, where: str) -> Layout:
    """The layout with its generated decode function (see `bmsgate.protocols.codegen`)."""

    def value_of(field: FieldSpec) -> Callable[[Any], Any]:
        return value_transform(field, f"{where} ({field.target})")

    fields = dict(enumerate(layout.sink_fields))
    return dataclasses.replace(layout, run=generate_layout(layout, fields, value_of, apply_shifted))


def _conditional(field: FieldSpec, step: Step, encoder: EncodeStep, end: int, where: str) -> tuple[Step, EncodeStep]:
    """Wrap a field's steps so that they run only while its `when` condition holds."""
    condition = field.when
    assert condition is not None  # only called for conditional fields
    name = condition.var[4:]
    holds = condition.holds
    low = condition.min if condition.min is not None else -math.inf
    high = condition.max if condition.max is not None else math.inf

    def encode_when(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        if holds(variables.get(name)):
            encoder(buffer, state, variables)

    return When(step, name, low, high, end, where), encode_when


def _compile_field(
    field: FieldSpec, default_endian: str, where: str, index: FrameIndexSpec | None = None
) -> tuple[Step, EncodeStep, int]:
    """Compile one field into (decode step, encode step, bytes of payload it needs)."""
    endian = ">" if (field.endian or default_endian) == "big" else "<"
    if field.type == "str":
        return _compile_string(field)
    read, size = raw_reader(field, endian)
    if field.count is not None:
        return _compile_list(field, size, endian, where, index)
    at = field.at
    sink = scalar_sink(field, where)

    # A scalar the layout's record does not read (odd size, other byte order, conditional, overlapping).
    def decode_scalar(payload: bytes, out: dict[str, Any], device: dict[str, Any], variables: dict[str, int]) -> None:
        sink(read(payload, at), out, device, variables)

    return decode_scalar, scalar_encoder(field, read, raw_writer(field, endian)), at + size


def _compile_string(field: FieldSpec) -> tuple[Step, EncodeStep, int]:
    target, at, size = field.target, field.at, field.size
    fixed = isinstance(size, int)
    end = at + size if isinstance(size, int) else at
    date_format = field.date_format
    to_var = target.startswith("var.")
    name = target[4:]
    store = storer(target)

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

    # Identity strings repeat on every poll: parse each distinct byte string once (values are immutable).
    parsed = BoundedMemo(parse, _STRING_MEMO_SIZE)

    def decode_string(payload: bytes, out: dict[str, Any], device: dict[str, Any], variables: dict[str, int]) -> None:
        value = parsed[payload[at : at + size] if isinstance(size, int) else payload[at:]]
        if value is None:
            return
        if to_var:
            variables[name] = value
        else:
            store(value, out, device, variables)

    def encode_string(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        value = variables.get(name) if to_var else lookup(state, target)
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


def _scaler(field: FieldSpec) -> Callable[[Sequence[Any]], list[Any]]:
    """The list form of the field's linear transform (`transforms.Linear`): raw values → values.

    An exact divisor (`exact_divisor`) divides, without noise; ``raw * scale`` with ``add`` = 0 and a
    positive scale is mapped in C, where it gives exactly ``raw * scale + add`` for integers narrower than
    53 bits (``+ 0.0`` only ever turns -0.0 into 0.0, and a positive scale times an integer is never -0.0).
    """
    scale, add = field.scale, field.add
    divisor = exact_divisor(scale, add) if field.type != "f32" else None
    if divisor is not None:
        steps, offset = divisor
        if steps < 0:

            def negative_divide(raw: Sequence[Any]) -> list[Any]:
                return [(value + offset) / steps + 0.0 for value in raw]

            return negative_divide
        if offset == 0:
            parts = repeat(steps)

            def divide(raw: Sequence[Any]) -> list[Any]:
                return list(map(truediv, raw, parts))

            return divide

        def shift_divide(raw: Sequence[Any]) -> list[Any]:
            return [(value + offset) / steps for value in raw]

        return shift_divide
    if field.type not in {"f32", "u64", "s64"} and add == 0 and scale > 0:
        factor = repeat(scale)  # scale and add are validated floats: the product is a float like the sum

        def multiply(raw: Sequence[Any]) -> list[Any]:
            return list(map(mul, raw, factor))

        return multiply

    def linear(raw: Sequence[Any]) -> list[Any]:
        return [value * scale + add for value in raw]

    return linear


def _compile_list(
    field: FieldSpec, size: int, endian: str, where: str, index: FrameIndexSpec | None = None
) -> tuple[Step, EncodeStep, int]:
    target, at = field.target, field.at
    scale, add = field.scale, field.add
    absent = frozenset(field.absent)
    stride = field.stride or size
    code = STRUCT_CODES.get(field.type)
    # Items struct cannot unpack as one array (3-byte integers, items further apart than their size: ABC's
    # index byte before each cell voltage) are read one by one (engine 5); every other list keeps its
    # single precompiled unpack.
    spaced = code is None or stride != size
    if spaced and field.type not in INTEGER_SIZES:
        raise ValueError(f"{where}: lists need an integer or f32 type")
    count = field.count
    limit_var = field.limit[4:] if field.limit else None

    # One compiled Struct per list length seen (the length comes from a decoded count).
    def new_unpacker(n: int) -> Callable[[bytes, int], tuple[Any, ...]]:
        if spaced:
            return _spaced_unpacker(field, endian, n, size, stride)
        return struct.Struct(f"{endian}{n}{code}").unpack_from

    unpacker = BoundedMemo(new_unpacker, _UNPACKER_MEMO_SIZE)
    count_var = count[4:] if isinstance(count, str) and count.startswith("var.") else None
    fixed_count = count if isinstance(count, int) else None
    end = at + stride * (fixed_count - 1) + size if fixed_count else at
    identity = scale == 1.0 and add == 0.0
    scaled = _scaler(field)
    extras_name = target[7:] if target.startswith("extras.") else None
    as_float = extras_name is None
    index_at = index.at if index is not None else -1
    index_base = index.base if index is not None else 0
    # A frame numbered by its first item (`numbers: items`) starts there; otherwise `count` items per number.
    per_number = 1 if index is not None and index.numbers == "items" else (fixed_count or 0)
    end = max(end, index_at + 1)

    # Non-finite floats (NaN, infinities) are dropped like `absent` markers: a float slot without a value.
    finite_only = field.type == "f32"

    def converted(raw: tuple[Any, ...]) -> list[Any]:
        if identity:
            # Snapshot lists hold floats even when the raw unit needs no scaling (stable JSON types).
            return list(map(float, raw)) if as_float else list(raw)
        return scaled(raw)

    def read_raw(payload: bytes, n: int) -> tuple[Any, ...]:
        needed = at + stride * (n - 1) + size if n else at
        if needed > len(payload):
            raise DecodeError(f"{where}: {n} values need {needed} payload bytes, frame has {len(payload)}")
        return unpacker[n](payload, at)

    def read_values(payload: bytes, n: int) -> list[Any]:
        raw = read_raw(payload, n)
        if absent:
            raw = tuple(value for value in raw if value not in absent)
        if finite_only:
            raw = tuple(value for value in raw if math.isfinite(value))
        return converted(raw)

    def read_positioned(payload: bytes, n: int) -> list[tuple[int, Any]]:
        """(offset in the frame's slice, value) of the items present: an absent one leaves its place empty."""
        raw = read_raw(payload, n)
        kept = [
            (offset, value)
            for offset, value in enumerate(raw)
            if value not in absent and not (finite_only and not math.isfinite(value))
        ]
        values = converted(tuple(value for _, value in kept))
        return [(offset, value) for (offset, _), value in zip(kept, values, strict=True)]

    if index is None and fixed_count is not None and extras_name is None:
        # The common table (cell voltages, sensors): one precompiled unpack; the layout's min_payload
        # already guarantees the bytes are there.
        unpack_fixed = new_unpacker(fixed_count)

        def decode_single(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], variables: dict[str, int]) -> None:
            # One sensor at its own offset (JK's temperatures 3-5): no tuple work.
            (value,) = unpack_fixed(payload, at)
            if value in absent or (limit_var is not None and variables.get(limit_var, 1) < 1):
                return
            if finite_only and not math.isfinite(value):
                return
            items = out.get(target)
            if items is None:
                items = out[target] = []
            items.append(float(value) if identity else scaled((value,))[0])

        def decode_fixed(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], variables: dict[str, int]) -> None:
            raw = unpack_fixed(payload, at)
            if limit_var is not None:
                limit = variables.get(limit_var)
                if limit is not None and limit < fixed_count:
                    raw = raw[: max(limit, 0)]
            if absent:
                raw = tuple([value for value in raw if value not in absent])
            if finite_only:
                raw = tuple([value for value in raw if math.isfinite(value)])
            if not raw and (absent or finite_only):
                return
            items = out.get(target)
            if items is None:
                # The first field of this target: its fresh list becomes the target's (no copy into an empty one).
                out[target] = list(map(float, raw)) if identity else scaled(raw)
            elif identity:
                items.extend(map(float, raw))
            else:
                items.extend(scaled(raw))

        step: Step = decode_single if fixed_count == 1 else decode_fixed
    elif index is not None:
        assert fixed_count is not None  # ReplySpec validation

        def decode_positioned(payload: bytes, out: dict[str, Any], _dev: dict[str, Any], _vars: dict[str, int]) -> None:
            number = payload[index_at] - index_base
            if number < 0:
                raise DecodeError(f"{where}: frame number {payload[index_at]} is below {index_base}")
            first = number * per_number
            placed = out.setdefault(POSITIONED, {}).setdefault(target, {})
            for offset, value in read_positioned(payload, fixed_count):
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
                items = out.setdefault(EXTRA_LISTS, {}).setdefault(extras_name, [])
            else:
                items = out.get(target)
                if items is None:
                    # The first field of this target: its fresh list becomes the target's.
                    out[target] = read_values(payload, n) if n > 0 else []
                    return
            if n > 0:
                items.extend(read_values(payload, n))

        step = decode_list

    writer = _spaced_writer(field, endian, size) if code is None else struct.Struct(endian + code).pack_into
    cursor = "@" + target

    def encode_list(buffer: bytearray, state: Mapping[str, Any], variables: dict[str, int]) -> None:
        values = list(lookup(state, target) or ())
        # Indexed replies: the frame's slice. Otherwise several fields may fill one list (temperatures in two
        # places, cells 9-16 after 1-8): continue where the last one stopped.
        start = variables.get(FRAME, 0) * (fixed_count or 0) if index is not None else variables.get(cursor, 0)
        n = fixed_count if fixed_count is not None else max(0, len(values) - start)
        used = min(n, variables[limit_var]) if limit_var is not None and limit_var in variables else n
        for offset in range(n):
            position = start + offset
            if offset < used and position < len(values):
                raw = clamp_raw(field, (float(values[position]) - add) / scale)
            elif absent:
                raw = min(absent)
            else:
                raw = 0
            writer(buffer, at + offset * stride, raw)
        if index is None:
            variables[cursor] = start + used

    return step, encode_list, end


def _spaced_unpacker(
    field: FieldSpec, endian: str, n: int, size: int, stride: int
) -> Callable[[bytes, int], tuple[Any, ...]]:
    """Read `n` items `stride` bytes apart, one by one (3-byte integers, or gaps between the items)."""
    code = STRUCT_CODES.get(field.type)
    if code is not None:
        unpack_one = struct.Struct(endian + code).unpack_from

        def unpack_struct_items(payload: bytes, offset: int) -> tuple[Any, ...]:
            return tuple(unpack_one(payload, offset + i * stride)[0] for i in range(n))

        return unpack_struct_items
    order: Literal["big", "little"] = "big" if endian == ">" else "little"
    signed = field.type.startswith("s")

    def unpack_int_items(payload: bytes, offset: int) -> tuple[Any, ...]:
        return tuple(
            int.from_bytes(payload[start : start + size], order, signed=signed)
            for start in range(offset, offset + n * stride, stride)
        )

    return unpack_int_items


def _spaced_writer(field: FieldSpec, endian: str, size: int) -> Callable[[bytearray, int, Any], None]:
    """Write one item of a type `struct` has no code for (3-byte integers)."""
    order: Literal["big", "little"] = "big" if endian == ">" else "little"
    signed = field.type.startswith("s")

    def write_int_item(buffer: bytearray, offset: int, value: Any) -> None:
        buffer[offset : offset + size] = int(value).to_bytes(size, order, signed=signed)

    return write_int_item
