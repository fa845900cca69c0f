"""One generated encode function per compiled layout: what its fields' encode steps write, at once.

Why generate: the simulator encodes every reply of every poll, and run field by field an encode costs a call
per field and a call per list item for the clamping (the simulated BMS was a fifth of the demo's CPU). A
generated encoder computes the raw values of the layout's scalars into locals and writes them with one
`struct` record; packed lists are converted by C-level maps and written with one pack each.

Why it is safe: the rules of `bmsgate.protocols.codegen` hold. The source text is built from this module's
template lines and names it makes up (``_k<n>`` bound constants, ``_r<n>`` raw values); every value from a
definition enters as a bound constant; `check_encoder_source` refuses anything else before `compile` sees
it, and the namespace has no builtins.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable
from itertools import repeat
from operator import truediv
from typing import TYPE_CHECKING, Any, Final

from bmsgate.protocols.codegen import _Source, check_tokens
from bmsgate.protocols.definition import INTEGER_SIZES
from bmsgate.protocols.memo import BoundedMemo
from bmsgate.protocols.transforms import _RAW_BOUNDS, STRUCT_CODES, lookup, raw_reader, raw_writer, scalar_inverse

if TYPE_CHECKING:
    from bmsgate.protocols.definition import FieldSpec

__all__ = ["check_encoder_source", "generate_encoder"]

_ENCODER_VOCABULARY: Final = frozenset(
    {
        "def",
        "encode_layout",
        "payload",
        "state",
        "variables",
        "value",
        "values",
        "items",
        "start",
        "count",
        "used",
        "limit",
        "get",
        "extend",
        "if",
        "elif",
        "else",
        "is",
        "not",
        "None",
        "and",
        "or",
        "in",
        "return",
    }
)
_UNBOUNDED: Final = 1 << 62
"""An extent's end that no payload reaches (a list as long as its values, text of any length)."""
_PACKERS_MEMO_SIZE: Final = 64
_MISSING: Final = object()
"""What a state without a target's key gives the generated lookups (its value may be None itself)."""
_ENCODER_FRAME: Final = "#frame"
"""`compile.FRAME` (not imported: compile imports this module): the frame number of an indexed reply."""

EncodeStep = Callable[[bytearray, Any, dict[str, int]], None]
"""`transforms.EncodeStep`: (payload, state, variables)."""


def check_encoder_source(source: str) -> None:
    """`check_source` for a generated encoder: template words, generated names, 0 and 1 only.

    Raises:
        ValueError: naming the offending token (a bug in the templates, never a definition's doing).
    """
    check_tokens(source, _ENCODER_VOCABULARY, "encoder")


class _EncoderSource(_Source):
    """The decoders' source builder (lines, bound constants, raw names) under an encoder's header."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = ["def encode_layout(payload, state, variables):"]


def _extent(field: FieldSpec) -> tuple[int, int]:
    """The payload bytes a field's encode step may read or write ([start, end))."""
    if field.shift:
        return -_UNBOUNDED, _UNBOUNDED
    at = field.at
    if field.type == "str":
        # A number written as text first reads the bytes its digits would cover, however many.
        if field.target.startswith("var.") or not isinstance(field.size, int):
            return at, _UNBOUNDED
        return at, at + field.size
    size = INTEGER_SIZES[field.type]
    if field.count is None:
        return at, at + size
    if isinstance(field.count, int):
        return at, max(at + size, at + (field.stride or size) * (field.count - 1) + size)
    return at, _UNBOUNDED


def _slot_kind(field: FieldSpec) -> bool:
    """A scalar whose raw value can be computed into a record slot (its own step only writes that slot)."""
    return (
        field.count is None
        and field.type in STRUCT_CODES
        and field.type != "f32"
        and field.when is None
        and not field.shift
        and not (field.target == "alarms" and field.codes is not None)
    )


def _packed_list(field: FieldSpec) -> bool:
    """A list whose items one `struct` code packs side by side (converted by maps, written by one pack)."""
    code = STRUCT_CODES.get(field.type)
    return (
        field.count is not None
        and code is not None
        and (field.stride is None or field.stride == struct.calcsize(code))
        and not field.shift
    )


def _value_lines(source: _EncoderSource, field: FieldSpec) -> list[str]:
    """``value = `` the field's state value, as its step looks it up (`transforms.lookup`)."""
    target = field.target
    if target.startswith("var."):
        return [f"value = variables.get({source.constant(target[4:])})"]
    return _looked_up(source, target)


def _looked_up(source: _EncoderSource, target: str) -> list[str]:
    """``value = lookup(state, target)`` (`transforms.lookup`) inline: a call of it was a quarter of an encode.

    The state's own value if it has the key; else, for ``prefix.name``, the name in a mapping under the
    prefix (a nested ``device`` dict), found by `lookup` itself only when there is something under it.
    """
    if "." not in target:
        # A plain name: the state's value, or None (there is no prefix to look under).
        return [f"value = state.get({source.constant(target)})"]
    prefix = target.partition(".")[0]
    missing = source.constant(_MISSING)
    return [
        f"value = state.get({source.constant(target)}, {missing})",
        f"if value is {missing}:",
        f"    value = state.get({source.constant(prefix)})",
        "    if value is not None:",
        f"        value = {source.constant(lookup)}(state, {source.constant(target)})",
    ]


def _guarded(source: _EncoderSource, raw: str, field: FieldSpec, order: str) -> list[str]:
    """Lines that hand a raw value the record may not hold to the field's own writer and read it back.

    The writer then raises what the step raised (a value out of the type's range), or stores what the step
    stored (a bool), and the slot goes on with what the step's next reader would have read.
    """
    low, high = _RAW_BOUNDS[field.type]
    read, _size = raw_reader(field, order)
    write = raw_writer(field, order)
    at = source.constant(field.at)
    return [
        f"if {source.constant(type)}({raw}) is not {source.constant(int)} or {raw} < {source.constant(low)}"
        f" or {raw} > {source.constant(high)}:",
        f"    {source.constant(write)}(payload, {at}, {raw})",
        f"    {raw} = {source.constant(read)}(payload, {at})",
    ]


def _balancing_raw(cells: Any, first: int, width: int) -> int:
    """`transforms.scalar_encoder`'s balancing mask: the bits of the cells the field's range holds."""
    raw = 0
    for cell in cells:
        if first <= cell < first + width:
            raw |= 1 << (cell - first)
    return raw


def _linear_raw(source: _EncoderSource, field: FieldSpec, value: str) -> str:
    """``round((float(value) - add) / scale)`` (`transforms.clamp_raw`'s input), without exact no-ops."""
    number = f"{source.constant(float)}({value})"
    if not (field.add == 0.0 and math.copysign(1.0, field.add) > 0):  # x - 0.0 is x; x - -0.0 is not
        number = f"({number} - {source.constant(field.add)})"
    if field.scale != 1.0:  # x / 1.0 is x, exactly
        number = f"{number} / {source.constant(field.scale)}"
    return f"{source.constant(round)}({number})"


def _slot_lines(source: _EncoderSource, raw: str, field: FieldSpec, order: str, shared: bool) -> list[str]:
    """What one scalar's step does to its slot, on the slot's value `raw` (0 before its first field).

    `shared`: other fields of the slot follow, which read the slot back; a raw value the slot's type cannot
    hold must then fail (or be stored and read back) where the step would have, not only at the record.
    """
    target = field.target
    low, high = _RAW_BOUNDS[field.type]
    if target == "alarms":
        # `encode_alarms`: the set flags OR-ed into the slot (always written, so always in range or failing).
        flags = sorted((field.flags or {}).items())
        if not flags:
            return []  # writes back what the slot holds
        lines = [f"value = state.get({source.constant(target)})", "if value:"]
        for bit, alarm in flags:
            lines += [
                f"    if {source.constant(alarm)} in value:",
                f"        {raw} = {raw} | {source.constant(1 << bit)}",
            ]
        if max(1 << bit for bit, _alarm in flags) > high:
            lines += ["    " + line for line in _guarded(source, raw, field, order)]
        return lines
    if target == "balancing_cells":
        first, width = field.cells or 1, 8 * INTEGER_SIZES[field.type]
        lines = [
            f"value = state.get({source.constant(target)})",
            f"{raw} = {source.constant(_balancing_raw)}(value, {source.constant(first)}, {source.constant(width)})"
            " if value else 0",
        ]
        return lines + (_guarded(source, raw, field, order) if (1 << width) - 1 > high else [])
    lines = _value_lines(source, field)
    absent = min(field.absent) if field.absent else None
    if field.bit is None and absent is not None:
        lines += ["if value is None:", f"    {raw} = {source.constant(absent)}"]
        if not low <= absent <= high:
            lines += ["    " + line for line in _guarded(source, raw, field, order)]
        lines.append("else:")
    else:
        lines.append("if value is not None:")
    linear = (
        field.bit is None
        and field.one_of is None
        and not field.popcount
        and field.map is None
        and field.version is None
        and field.date is None
        and field.sign_magnitude is None
        and field.sign_char is None
        and not field.difference
        and not field.multiplier
    )
    if linear:
        # `clamp_raw`: max(low, min(high, raw)) for low < high, with the comparisons inline.
        lines += [
            f"    {raw} = {_linear_raw(source, field, 'value')}",
            f"    if {raw} < {source.constant(low)}:",
            f"        {raw} = {source.constant(low)}",
            f"    elif {raw} > {source.constant(high)}:",
            f"        {raw} = {source.constant(high)}",
        ]
        return lines
    if field.bit is not None:
        mask = 1 << field.bit
        test = "value" if not field.invert else "not value"  # bool(value) != invert
        lines += [f"    if {test}:", f"        {raw} = {raw} | {source.constant(mask)}"]
        if mask > high:
            lines += ["        " + line for line in _guarded(source, raw, field, order)]
        return lines
    lines.append(f"    {raw} = {source.constant(scalar_inverse(field))}(value, {raw})")
    if shared:
        lines += ["    " + line for line in _guarded(source, raw, field, order)]
    return lines


def _list_lines(source: _EncoderSource, field: FieldSpec, order: str, step: EncodeStep, indexed: bool) -> list[str]:
    """`compile._compile_list`'s `encode_list` for a packed list: the values converted by C maps, one pack.

    A negative start or limit (only a hostile state gives one) is left to the step, which indexes as it did.
    """
    code = STRUCT_CODES[field.type]
    count = field.count
    fixed = count if isinstance(count, int) else None
    cursor = source.constant("@" + field.target)
    # Lists are looked up in the state whatever their target (`encode_list`), a ``var.`` one too.
    lines = [*_looked_up(source, field.target), f"values = {source.constant(list)}(value or ())"]
    if indexed:
        lines.append(f"start = variables.get({source.constant(_ENCODER_FRAME)}, 0) * {source.constant(fixed or 0)}")
    else:
        lines.append(f"start = variables.get({cursor}, 0)")
    if fixed is not None:
        lines.append(f"count = {source.constant(fixed)}")
    else:
        lines.append(f"count = {source.constant(max)}(0, {source.constant(len)}(values) - start)")
    lines.append("used = count")
    if field.limit:
        lines += [
            f"limit = variables.get({source.constant(field.limit[4:])})",
            "if limit is not None and limit < count:",
            "    used = limit",
        ]
    mapped = source.constant(map)
    items = f"{mapped}({source.constant(float)}, values[start:start + used])"
    if not (field.add == 0.0 and math.copysign(1.0, field.add) > 0):
        items = f"{mapped}({source.constant(operator.sub)}, {items}, {source.constant(repeat(field.add))})"
    if field.scale != 1.0:
        items = f"{mapped}({source.constant(truediv)}, {items}, {source.constant(repeat(field.scale))})"
    body = []
    if field.type == "f32":
        body.append(f"items = {source.constant(list)}({items})")
    else:
        low, high = _RAW_BOUNDS[field.type]
        clamped = (
            f"{mapped}({source.constant(max)}, {source.constant(repeat(low))}, "
            f"{mapped}({source.constant(min)}, {source.constant(repeat(high))}, items))"
        )
        body += [
            f"items = {source.constant(list)}({mapped}({source.constant(round)}, {items}))",
            f"if items and ({source.constant(min)}(items) < {source.constant(low)}"
            f" or {source.constant(max)}(items) > {source.constant(high)}):",
            f"    items = {source.constant(list)}({clamped})",
        ]
    filler = min(field.absent) if field.absent else 0
    length = source.constant(len)
    body += [
        f"if {length}(items) < count:",
        f"    items.extend({source.constant(repeat)}({source.constant(filler)}, count - {length}(items)))",
    ]
    at = source.constant(field.at)
    if fixed is not None:
        pack = source.constant(struct.Struct(f"{order}{fixed}{code}").pack_into)
        body.append(f"{pack}(payload, {at}, *items)" if fixed > 0 else "")
    else:
        packers = source.constant(BoundedMemo(_packer_of(order, code), _PACKERS_MEMO_SIZE))
        body += ["if count > 0:", f"    {packers}[count](payload, {at}, *items)"]
    if not indexed:
        body.append(f"variables[{cursor}] = start + used")
    return [
        *lines,
        "if start < 0 or used < 0:",
        f"    {source.constant(step)}(payload, state, variables)",
        "else:",
        *("    " + line for line in body if line),
    ]


def _packer_of(order: str, code: str) -> Callable[[int], Callable[..., None]]:
    """Count → the precompiled pack of that many items (memoized per list: a few cell counts)."""

    def packer(count: int) -> Callable[..., None]:
        return struct.Struct(f"{order}{count}{code}").pack_into

    return packer


def generate_encoder(
    fields: list[tuple[FieldSpec, EncodeStep]],
    byte_order: str,
    index: tuple[int, int, int] | None,
) -> EncodeStep:
    """The payload encoder of one layout: what its fields' steps write, in order, into a zeroed payload.

    `fields` are the layout's fields with their own encode steps (wrapped for `when` and `shift`), in
    definition order; `index` is an indexed reply's (number byte offset, base, items per number). The
    result must be called on a fresh, zeroed payload (the record writes its gaps as zeros); the index byte
    is written here, after the record and before the other steps, as the frame encoder wrote it before all.

    Scalars whose bytes no other field (nor the index byte) reads or writes are computed into locals, slot
    by slot in field order (fields sharing a slot see each other's raw value as the steps did through the
    buffer), and written at once; so their place among the other steps cannot change what any step sees.
    """
    source = _EncoderSource()
    extents = [_extent(field) for field, _step in fields]
    slots: dict[tuple[int, str, str], list[int]] = {}
    for position, (field, _step) in enumerate(fields):
        if _slot_kind(field):
            order = byte_order if field.endian is None else (">" if field.endian == "big" else "<")
            slots.setdefault((field.at, field.type, order), []).append(position)
    in_record: set[int] = set()
    chosen: list[tuple[int, str, str, list[int]]] = []
    for (at, kind, order), members in slots.items():
        end = at + INTEGER_SIZES[kind]
        alone = all(
            position in members or extents[position][1] <= at or extents[position][0] >= end
            for position in range(len(fields))
        )
        if alone and not (index is not None and at <= index[0] < end):
            chosen.append((at, kind, order, members))
            in_record.update(members)
    chosen.sort()
    record_codes = ""
    record_raws: list[str] = []
    single_writes: list[str] = []
    position_in_record = 0
    for at, kind, order, members in chosen:
        (raw,) = source.raw_names(1)
        source.emit(f"{raw} = 0")
        for number, member in enumerate(members):
            field = fields[member][0]
            source.emit(*_slot_lines(source, raw, field, order, shared=number < len(members) - 1))
        if order == byte_order:
            if at > position_in_record:
                record_codes += f"{at - position_in_record}x"
            record_codes += STRUCT_CODES[kind]
            position_in_record = at + INTEGER_SIZES[kind]
            record_raws.append(raw)
        else:
            pack = source.constant(struct.Struct(order + STRUCT_CODES[kind]).pack_into)
            single_writes.append(f"{pack}(payload, {source.constant(at)}, {raw})")
    if record_raws:
        record = source.constant(struct.Struct(byte_order + record_codes).pack_into)
        source.emit(f"{record}(payload, 0, {', '.join(record_raws)})")
    source.emit(*single_writes)
    if index is not None:
        at, base, per_number = index
        source.emit(
            f"payload[{source.constant(at)}] = ({source.constant(base)} + variables.get("
            f"{source.constant(_ENCODER_FRAME)}, 0) * {source.constant(per_number)}) & {source.constant(0xFF)}"
        )
    for position, (field, step) in enumerate(fields):
        if position in in_record:
            continue
        if _packed_list(field):
            order = byte_order if field.endian is None else (">" if field.endian == "big" else "<")
            when = field.when
            if when is None:
                source.emit(*_list_lines(source, field, order, step, index is not None))
                continue
            # `compile._conditional`'s `encode_when`: the list only while its variable is known and in range
            # (`WhenSpec.holds`). Where a hostile state leaves it to its step, that step tests again and holds.
            low = when.min if when.min is not None else -math.inf
            high = when.max if when.max is not None else math.inf
            source.emit(
                f"value = variables.get({source.constant(when.var[4:])})",
                f"if value is not None and {source.constant(low)} <= value <= {source.constant(high)}:",
                *("    " + line for line in _list_lines(source, field, order, step, index is not None)),
            )
        else:
            source.emit(f"{source.constant(step)}(payload, state, variables)")
    source.emit("return None")
    text = "\n".join(source.lines) + "\n"
    check_encoder_source(text)
    exec(compile(text, "<bmsgate generated encoder>", "exec"), source.namespace)  # noqa: S102  # checked above
    function: EncodeStep = source.namespace["encode_layout"]
    return function
