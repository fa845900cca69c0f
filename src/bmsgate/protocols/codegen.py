"""One generated decode function per compiled layout, assembled from fixed templates.

Why generate: interpreting a layout costs a loop iteration, tuple unpacking and often a call per field on
every poll. A generated function unpacks the layout's `struct` record straight into locals and spends one
line per field, with the linear scales, casts and bit flags written inline.

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
import re
import tokenize
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from bmsgate.protocols.memo import BoundedMemo
from bmsgate.protocols.transforms import Step, When

if TYPE_CHECKING:
    from bmsgate.protocols.decode import Layout
    from bmsgate.protocols.definition import FieldSpec

__all__ = ["check_source", "generate_layout"]

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
    }
)
_LITERALS: Final = frozenset({"0", "1"})
_EXTRAS: Final = "extras"

Apply = Callable[[Any, bytes, dict[str, Any], dict[str, Any], dict[str, int]], None]
"""How shifted sub-layouts run (`decode._apply_shifted`): (groups, payload, out, device, variables)."""


class _Source:
    """Template lines plus the namespace their ``_k`` names refer to."""

    def __init__(self) -> None:
        self.lines = ["def decode_layout(payload, out, device, variables):"]
        self.namespace: dict[str, Any] = {"__builtins__": {}}
        self._constants = 0
        self._extras = False

    def constant(self, value: Any) -> str:
        name = f"_k{self._constants}"
        self._constants += 1
        self.namespace[name] = value
        return name

    def emit(self, *lines: str) -> None:
        self.lines.extend("    " + line for line in lines)

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
        names = [f"_r{index}" for index in range(slots)]
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
    for step in layout.steps:
        if isinstance(step, When):
            # A conditional field: test its variable here instead of in a call.
            source.emit(
                f"value = variables.get({source.constant(step.name)})",
                f"if value is not None and {source.constant(step.low)} <= value <= {source.constant(step.high)}:",
                f"    if {source.constant(len)}(payload) < {source.constant(step.end)}:",
                f"        {source.constant(step.too_short)}(payload)",
                f"    {source.constant(step.step)}(payload, out, device, variables)",
            )
        else:
            source.emit(f"{source.constant(step)}(payload, out, device, variables)")
    if layout.shifted:
        shifted = source.constant(layout.shifted)
        source.emit(f"{source.constant(apply_shifted)}({shifted}, payload, out, device, variables)")
    source.emit("return None")
    text = "\n".join(source.lines) + "\n"
    check_source(text)
    exec(compile(text, "<bmsgate generated layout>", "exec"), source.namespace)  # noqa: S102  # checked above
    function: Step = source.namespace["decode_layout"]
    return function
