"""One generated decode function per compiled layout, assembled from fixed templates.

Why generate: interpreting a layout costs a loop iteration, tuple unpacking and often a call per field on
every poll. A generated function unpacks the layout's `struct` record straight into locals and spends one
line per field, with the linear scales, casts and bit flags written inline; packed integer lists (cells,
sensors, wire resistances) are one unpack and one list display, or one C-level map when a variable or the
payload gives their length, with only their error cases left to the field's own step.

Why it is safe: the source text is built only from the template lines of this module and names it makes
up itself (``_k<n>`` for bound constants, ``_r<n>`` for record values). Every value that comes from a
definition (targets, extras keys, scales, offsets, alarm names, map values, struct formats, sinks) enters
the function as an object in its namespace, never as source text. `check_source` enforces that on the
finished text before `compile` sees it: no string literal, no number but 0 and 1, no name outside the
template vocabulary. The namespace has no builtins, so even a name that slipped through could reach none.
"""

from __future__ import annotations

import io
import keyword
import math
import operator
import re
import struct
import tokenize
from collections.abc import Callable
from itertools import repeat
from operator import mul, truediv
from typing import TYPE_CHECKING, Any, Final

from bmsgate.protocols.definition import INTEGER_SIZES
from bmsgate.protocols.memo import BoundedMemo
from bmsgate.protocols.transforms import (
    RAW_BOUNDS,
    STRUCT_CODES,
    Step,
    When,
    exact_divisor,
    lookup,
    raw_reader,
    raw_writer,
    scalar_inverse,
)

if TYPE_CHECKING:
    from bmsgate.protocols.decode import Layout
    from bmsgate.protocols.definition import FieldSpec

__all__ = ["check_encoder_source", "check_source", "generate_encoder", "generate_layout"]

# Distinct raw values of one device field (a firmware version, a production date): a few per installation.
_DEVICE_MEMO_SIZE: Final = 32
# Distinct balancing masks of one field: they change while balancing, so keep a few dozen.
_CELLS_MEMO_SIZE: Final = 64
_GENERATED_NAME: Final = re.compile(r"_[kr]\d+\Z")
_VOCABULARY: Final = frozenset(
    {
        "def",
        "decode_layout",
        "get",
        "and",
        "update",
        "bit_count",
        "if",
        "is",
        "None",
        "not",
        "return",
        "payload",
        "out",
        "device",
        "variables",
        "extras",
        "value",
        "items",
        "limit",
        "del",
        "in",
        "else",
        "elif",
        "or",
        "append",
        "extend",
        "setdefault",
    }
)
_LITERALS: Final = frozenset({"0", "1"})
_EXTRAS: Final = "extras"
# `decode.EXTRA_LISTS` (not imported: decode imports this module's users): lists decoded into extras.
_EXTRA_LISTS: Final = "#extra_lists"
# Inlined lists write one line per item: beyond this many a call of the list's step is as fast.
_INLINE_ITEMS: Final = 64
# Distinct lengths of one variable-length list (cell and sensor counts): a handful per installation.
_UNPACKERS_MEMO_SIZE: Final = 64

Apply = Callable[[Any, bytes, dict[str, Any], dict[str, Any], dict[str, int]], None]
"""How shifted sub-layouts run (`decode._apply_shifted`): (groups, payload, out, device, variables)."""


class _Source:
    """Template lines plus the namespace their ``_k`` names refer to."""

    def __init__(self) -> None:
        self.lines = ["def decode_layout(payload, out, device, variables):"]
        self.namespace: dict[str, Any] = {"__builtins__": {}}
        self._constants = 0
        self._extras = False
        self.raws = 0
        """Record values named so far (``_r0`` .. ``_r<raws - 1>``); inlined lists name theirs after them."""

    def constant(self, value: Any) -> str:
        name = f"_k{self._constants}"
        self._constants += 1
        self.namespace[name] = value
        return name

    def emit(self, *lines: str) -> None:
        self.lines.extend("    " + line for line in lines)

    def raw_names(self, count: int) -> list[str]:
        """`count` fresh ``_r`` names for the items of an inlined list."""
        names = [f"_r{index}" for index in range(self.raws, self.raws + count)]
        self.raws += count
        return names

    def need_extras(self) -> None:
        """Bind ``extras`` to the output's extras dict (created where the first field writes it)."""
        if not self._extras:
            key = self.constant(_EXTRAS)
            self.emit(f"extras = out.get({key})", "if extras is None:", f"    extras = out[{key}] = {{}}")
            self._extras = True


def check_source(source: str) -> None:
    """Refuse generated source that holds anything but template words, generated names, 0 and 1.

    Raises:
        ValueError: naming the offending token (a bug in the templates, never a definition's doing).
    """
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        text = token.string
        if token.type == tokenize.NAME:
            if not (_GENERATED_NAME.match(text) or text in _VOCABULARY):
                raise ValueError(f"generated decoder holds an unexpected name {text!r}")
            if keyword.iskeyword(text) and text not in _VOCABULARY:
                raise ValueError(f"generated decoder holds an unexpected keyword {text!r}")
        elif token.type == tokenize.NUMBER:
            if text not in _LITERALS:
                raise ValueError(f"generated decoder holds an unexpected number {text!r}")
        elif token.type not in {
            tokenize.OP,
            tokenize.NEWLINE,
            tokenize.NL,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        }:
            raise ValueError(f"generated decoder holds an unexpected token {text!r}")


def _is_snapshot_bit(field: FieldSpec) -> bool:
    """A flag read from one bit straight into a snapshot field (the commonest non-linear scalar)."""
    return field.bit is not None and not field.absent and "." not in field.target


def _cells_of(first: int) -> Callable[[int], tuple[int, ...]]:
    """Raw bitmask → the cell numbers it marks (`transforms._cells_sink`, as a memoizable function)."""

    def cells(raw: int) -> tuple[int, ...]:
        return tuple(first + bit for bit in range(raw.bit_length()) if (raw >> bit) & 1)

    return cells


def _plain(field: FieldSpec) -> bool:
    """A raw value used as it is: no transform, and an integer narrow enough that int(raw * 1.0) is raw."""
    return (
        field.bit is None
        and field.sign_magnitude is None
        and field.sign_char is None
        and not field.difference
        and not field.multiplier
        and field.one_of is None
        and not field.popcount
        and field.map is None
        and field.version is None
        and field.date is None
        and not field.invert
        and field.type not in {"f32", "u64", "s64"}
        and field.scale == 1
        and field.add == 0
    )


def _linear_expression(source: _Source, index: int, scale: Any, add: Any, divide: bool) -> str:
    """``raw × scale + add``, or ``(raw + add) / scale`` for an exact divisor (`transforms.Linear`)."""
    if not divide:
        return f"_r{index} * {source.constant(scale)} + {source.constant(add)}"
    quotient = f"(_r{index} + {source.constant(add)}) / {source.constant(scale)}"
    if add == 0:
        quotient = f"_r{index} / {source.constant(scale)}"
    # A negative divisor gives -0.0 for a zero; adding 0.0 makes it 0.0 (as the multiplication did).
    return quotient + f" + {source.constant(0.0)}" if scale < 0 else quotient


def _emit_sink(
    source: _Source, raw: str, field: FieldSpec, sink: Callable[..., None], value_of: Callable[[Any], Any]
) -> None:
    """One record scalar whose transform is not linear: inline where it pays, else a call of its sink.

    Each inline form writes what the field's sink (`transforms.scalar_sink`) writes; the vectors and the
    engine tests hold the two to one result.
    """
    target = field.target
    narrow = field.type not in {"f32", "u64", "s64"}
    if field.absent:
        source.emit(f"{source.constant(sink)}({raw}, out, device, variables)")
    elif _is_snapshot_bit(field):
        assert field.bit is not None  # _is_snapshot_bit
        test = "!=" if not field.invert else "=="
        source.emit(f"out[{source.constant(target)}] = (({raw} >> {source.constant(field.bit)}) & 1) {test} 0")
    elif target.startswith("var.") and _plain(field):
        source.emit(f"variables[{source.constant(target[4:])}] = {raw}")
    elif target.startswith("var.") and field.popcount and narrow and field.bit is None and field.map is None:
        source.emit(f"variables[{source.constant(target[4:])}] = {raw}.bit_count()")
    elif target.startswith("device."):
        # Device values (versions, dates) repeat every poll: transform each distinct raw value once.
        memo = source.constant(BoundedMemo(value_of, _DEVICE_MEMO_SIZE))
        source.emit(
            f"value = {memo}[{raw}]",
            "if value is not None:",
            f"    device[{source.constant(target[7:])}] = value",
        )
    elif target.startswith("extras.") and field.map is not None and field.bit is None:
        source.need_extras()
        mapping = source.constant(dict(field.map))
        source.emit(f"extras[{source.constant(target[7:])}] = {mapping}.get({raw}, {raw})")
    elif target == "balancing_cells" and field.cells is not None:
        key, memo = source.constant(target), source.constant(BoundedMemo(_cells_of(field.cells), _CELLS_MEMO_SIZE))
        source.emit(
            f"value = out.get({key})",
            "if value is None:",
            f"    value = out[{key}] = {source.constant(set)}()",
            f"if {raw}:",
            f"    value.update({memo}[{raw}])",
        )
    elif target == "alarms" and field.codes is None:
        # Alarm bits are almost always all clear: skip the call then (the sink does nothing for 0).
        source.emit(f"if {raw}:", f"    {source.constant(sink)}({raw}, out, device, variables)")
    else:
        source.emit(f"{source.constant(sink)}({raw}, out, device, variables)")


def _list_item(source: _Source, field: FieldSpec, extras: bool) -> Callable[[str], str]:
    """The expression of one list item from its raw name: what `compile._scaler` (or the identity) gives."""
    scale, add = field.scale, field.add
    if scale == 1.0 and add == 0.0:
        # Snapshot lists hold floats (int + 0.0 is float(int), exactly); extras keep their ints.
        zero = source.constant(0.0)
        return (lambda raw: raw) if extras else (lambda raw: f"{raw} + {zero}")
    divisor = exact_divisor(scale, add)
    if divisor is not None:
        steps, offset = divisor
        divide, shift, zero = source.constant(steps), source.constant(offset), source.constant(0.0)
        if steps < 0:
            return lambda raw: f"({raw} + {shift}) / {divide} + {zero}"
        if offset == 0:
            return lambda raw: f"{raw} / {divide}"
        return lambda raw: f"({raw} + {shift}) / {divide}"
    factor = source.constant(scale)
    if field.type not in {"u64", "s64"} and add == 0 and scale > 0:
        return lambda raw: f"{raw} * {factor}"
    offset_constant = source.constant(add)
    return lambda raw: f"{raw} * {factor} + {offset_constant}"


def _mapped_items(source: _Source, field: FieldSpec, extras: bool, raw: str) -> str:
    """A list of the items of the raw tuple `raw`, mapped in C: the values `_list_item` writes, op for op."""
    scale, add = field.scale, field.add
    listed, mapped = source.constant(list), source.constant(map)

    def each(operation: Callable[[Any, Any], Any], operand: Any, inner: str) -> str:
        return f"{mapped}({source.constant(operation)}, {inner}, {source.constant(repeat(operand))})"

    if scale == 1.0 and add == 0.0:
        return f"{listed}({raw})" if extras else f"{listed}({mapped}({source.constant(float)}, {raw}))"
    divisor = exact_divisor(scale, add)
    if divisor is not None:
        steps, offset = divisor
        shifted = raw if offset == 0 else each(operator.add, offset, raw)
        quotient = each(truediv, steps, shifted)
        return f"{listed}({each(operator.add, 0.0, quotient) if steps < 0 else quotient})"
    if field.type not in {"u64", "s64"} and add == 0 and scale > 0:
        return f"{listed}({each(mul, scale, raw)})"
    return f"{listed}({each(operator.add, add, each(mul, scale, raw))})"


def _stored(source: _Source, field: FieldSpec, extras: bool, items: str) -> list[str]:
    """The lines that add the list `items` to the field's target (`_compile_list`'s steps: first list kept)."""
    if extras:
        # `decode_list` into extras: the numbered keys are made once the poll's lists are complete.
        lists, name = source.constant(_EXTRA_LISTS), source.constant(field.target[7:])
        return [f"out.setdefault({lists}, {{}}).setdefault({name}, []).extend({items})"]
    target = source.constant(field.target)
    return [
        f"value = out.get({target})",
        "if value is None:",
        f"    out[{target}] = {items}",
        "else:",
        f"    value.extend({items})",
    ]


def _unpacker_of(order: str, code: str) -> Callable[[int], Callable[[bytes, int], tuple[Any, ...]]]:
    """Count → the precompiled unpack of that many items (memoized per list: a few cell counts)."""

    def unpacker(count: int) -> Callable[[bytes, int], tuple[Any, ...]]:
        return struct.Struct(f"{order}{count}{code}").unpack_from

    return unpacker


def _inline_counted_list(
    source: _Source, field: FieldSpec, extras: bool, order: str, code: str, size: int, step: Step
) -> list[str]:
    """A list whose length a variable or the payload gives (`decode_list`): the usual case inline.

    An unknown count variable or a payload too short for the count is left to the field's own step, which
    raises the error it always raised; a count of zero or less stores what the step stores then.
    """
    at = source.constant(field.at)
    if isinstance(field.count, str) and field.count.startswith("var."):
        lines = [f"limit = variables.get({source.constant(field.count[4:])})"]
    else:
        lines = [
            f"limit = {source.constant(max)}(({source.constant(len)}(payload) - {at}) // {source.constant(size)}, 0)"
        ]
    if field.limit:
        lines += [
            f"value = variables.get({source.constant(field.limit[4:])})",
            "if value is not None and limit is not None and value < limit:",
            "    limit = value",
        ]
    unpack = source.constant(BoundedMemo(_unpacker_of(order, code), _UNPACKERS_MEMO_SIZE))
    items = _mapped_items(source, field, extras, f"{unpack}[limit](payload, {at})")
    if extras:
        empty = [
            f"out.setdefault({source.constant(_EXTRA_LISTS)}, {{}}).setdefault({source.constant(field.target[7:])}, [])"
        ]
    else:
        target = source.constant(field.target)
        empty = [f"if out.get({target}) is None:", f"    out[{target}] = []"]
    fits = f"{at} + {source.constant(size)} * limit <= {source.constant(len)}(payload)"
    return [
        *lines,
        f"if limit is not None and limit > 0 and {fits}:",
        *("    " + line for line in _stored(source, field, extras, items)),
        "elif limit is None or limit > 0:",
        f"    {source.constant(step)}(payload, out, device, variables)",
        "else:",
        *("    " + line for line in empty),
    ]


def _inline_list(source: _Source, field: FieldSpec, byte_order: str, step: Step) -> list[str] | None:
    """The lines that decode a list field in place of its step (None: keep calling the step).

    Only lists with one `struct` code per item, packed, of integers (floats keep their finiteness filter),
    and without `absent` markers (but one fixed item may have them) are written inline; each form writes
    what `compile._compile_list`'s step writes (`decode_single`, `decode_fixed`, `decode_list`), which
    `tests/protocols/test_codegen.py` holds the two to on every built-in layout and on every list form.
    """
    count = field.count
    code = STRUCT_CODES.get(field.type)
    size = struct.calcsize(code) if code is not None else 0
    if (
        count is None
        or (isinstance(count, int) and not 1 <= count <= _INLINE_ITEMS)
        or code is None
        or field.type == "f32"
        or (field.stride is not None and field.stride != size)
    ):
        return None
    extras = field.target.startswith("extras.")
    if field.absent and (extras or count != 1):
        return None
    order = byte_order if field.endian is None else (">" if field.endian == "big" else "<")
    if not isinstance(count, int):
        return _inline_counted_list(source, field, extras, order, code, size, step)
    unpack = source.constant(struct.Struct(f"{order}{count}{code}").unpack_from)
    names = source.raw_names(count)
    item = _list_item(source, field, extras)
    limit = source.constant(field.limit[4:]) if field.limit else None
    if count == 1 and not extras:
        # `decode_single`: one sensor, skipped when absent or when the limit allows none.
        tests = []
        if field.absent:
            tests.append(f"{names[0]} not in {source.constant(frozenset(field.absent))}")
        if limit is not None:
            tests.append(f"variables.get({limit}, 1) >= 1")
        target = source.constant(field.target)
        append = [
            f"{names[0]}, = {unpack}(payload, {source.constant(field.at)})",
            f"value = out.get({target})",
            "if value is None:",
            f"    value = out[{target}] = []",
            f"value.append({item(names[0])})",
        ]
        if not tests:
            return append
        return [append[0], f"if {' and '.join(tests)}:", *("    " + line for line in append[1:])]
    full = f"items = [{', '.join(item(name) for name in names)}]"
    lines = [f"items = {unpack}(payload, {source.constant(field.at)})"]
    if limit is None:
        lines += [f"{', '.join(names)}, = items", full]
    else:
        # A limit below the count (16 cells of a 32-cell table): map the items that count, not all of them.
        head = f"items[:{source.constant(max)}(limit, 0)]"
        lines += [
            f"limit = variables.get({limit})",
            f"if limit is not None and limit < {source.constant(count)}:",
            f"    items = {_mapped_items(source, field, extras, head)}",
            "else:",
            f"    {', '.join(names)}, = items",
            f"    {full}",
        ]
    return lines + _stored(source, field, extras, "items")


def generate_layout(
    layout: Layout,
    fields: dict[int, FieldSpec],
    value_of: Callable[[FieldSpec], Callable[[Any], Any]],
    apply_shifted: Apply,
) -> Step:
    """The decode function of one layout: the same result as running its tables field by field.

    `fields` maps each sink's position in `layout.sinks` to its field (to inline what pays);
    `value_of` gives a field's raw → value transform (memoized here for device fields).
    """
    source = _Source()
    if layout.record is not None:
        slots = 1 + max(
            [index for index, *_ in layout.numbers]
            + [index for index, *_ in layout.casts]
            + [index for index, *_ in layout.extras]
            + [index for index, _sink in layout.sinks]
        )
        names = source.raw_names(slots)
        source.emit(f"{', '.join(names)}, = {source.constant(layout.record)}(payload, 0)")
        for index, name, scale, add, divide in layout.numbers:
            source.emit(f"out[{source.constant(name)}] = {_linear_expression(source, index, scale, add, divide)}")
        for position, (index, sink) in enumerate(layout.sinks):
            field = fields[position]
            _emit_sink(source, f"_r{index}", field, sink, value_of(field))
        for index, name, cast in layout.casts:
            # Record values are ints here (floats are never cast): bool(x) is x != 0, int(x) is x.
            value = f"_r{index} != 0" if cast is bool else f"_r{index}"
            source.emit(f"out[{source.constant(name)}] = {value}")
        if layout.extras:
            source.need_extras()
            for index, name, scale, add, divide in layout.extras:
                value = _linear_expression(source, index, scale, add, divide)
                source.emit(f"extras[{source.constant(name)}] = {value}")
    step_fields = layout.step_fields or (None,) * len(layout.steps)
    for step, list_field in zip(layout.steps, step_fields, strict=True):
        inner = step.step if isinstance(step, When) else step
        body = _inline_list(source, list_field, layout.byte_order, inner) if list_field is not None else None
        if body is None:
            body = [f"{source.constant(inner)}(payload, out, device, variables)"]
        if isinstance(step, When):
            # A conditional field: test its variable here instead of in a call.
            source.emit(
                f"value = variables.get({source.constant(step.name)})",
                f"if value is not None and {source.constant(step.low)} <= value <= {source.constant(step.high)}:",
                f"    if {source.constant(len)}(payload) < {source.constant(step.end)}:",
                f"        {source.constant(step.too_short)}(payload)",
                *("    " + line for line in body),
            )
        else:
            source.emit(*body)
    if layout.shifted:
        shifted = source.constant(layout.shifted)
        source.emit(f"{source.constant(apply_shifted)}({shifted}, payload, out, device, variables)")
    source.emit("return None")
    text = "\n".join(source.lines) + "\n"
    check_source(text)
    exec(compile(text, "<bmsgate generated layout>", "exec"), source.namespace)  # noqa: S102  # checked above
    function: Step = source.namespace["decode_layout"]
    return function


# -- encoders ---------------------------------------------------------------------------------------------
#
# The simulator encodes every reply of every poll. Run field by field, an encode costs a call per field
# (and a call per list item for the clamping), which made the simulated BMS a fifth of the demo's CPU.
# A generated encoder computes the raw values of the layout's scalars into locals and writes them with one
# `struct` record; packed integer lists are converted by C-level maps and written with one pack each. The
# same safety rules as for the decoders hold: template lines, generated names, bound constants, no builtins.

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
    _check_tokens(source, _ENCODER_VOCABULARY)


def _check_tokens(source: str, vocabulary: frozenset[str]) -> None:
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        text = token.string
        if token.type == tokenize.NAME:
            if not (_GENERATED_NAME.match(text) or text in vocabulary):
                raise ValueError(f"generated encoder holds an unexpected name {text!r}")
        elif token.type == tokenize.NUMBER:
            if text not in _LITERALS:
                raise ValueError(f"generated encoder holds an unexpected number {text!r}")
        elif token.type not in {
            tokenize.OP,
            tokenize.NEWLINE,
            tokenize.NL,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        }:
            raise ValueError(f"generated encoder holds an unexpected token {text!r}")


class _EncoderSource(_Source):
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
    low, high = RAW_BOUNDS[field.type]
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
    low, high = RAW_BOUNDS[field.type]
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
        low, high = RAW_BOUNDS[field.type]
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
