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
import operator
import re
import struct
import tokenize
from collections.abc import Callable
from itertools import repeat
from operator import mul, truediv
from typing import TYPE_CHECKING, Any, Final

from bmsgate.protocols.memo import BoundedMemo
from bmsgate.protocols.transforms import STRUCT_CODES, Step, When, exact_divisor

if TYPE_CHECKING:
    from bmsgate.protocols.decode import Layout
    from bmsgate.protocols.definition import FieldSpec

__all__ = ["check_source", "check_tokens", "generate_layout"]

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
    check_tokens(source, _VOCABULARY, "decoder")


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


def check_tokens(source: str, vocabulary: frozenset[str], kind: str) -> None:
    """Refuse `source` unless it holds only `vocabulary` words, generated names, 0 and 1."""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        text = token.string
        if token.type == tokenize.NAME:
            if not (_GENERATED_NAME.match(text) or text in vocabulary):
                raise ValueError(f"generated {kind} holds an unexpected name {text!r}")
            if keyword.iskeyword(text) and text not in vocabulary:
                raise ValueError(f"generated {kind} holds an unexpected keyword {text!r}")
        elif token.type == tokenize.NUMBER:
            if text not in _LITERALS:
                raise ValueError(f"generated {kind} holds an unexpected number {text!r}")
        elif token.type not in {
            tokenize.OP,
            tokenize.NEWLINE,
            tokenize.NL,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        }:
            raise ValueError(f"generated {kind} holds an unexpected token {text!r}")
