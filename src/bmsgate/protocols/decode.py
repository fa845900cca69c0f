"""Decoding: the reply frames of one poll → one `BatterySnapshot`, running the compiled layouts.

Each layout runs as its generated function (`Layout.run`, built by `bmsgate.protocols.codegen`): one
`struct` unpack of every fixed-offset scalar into locals, the linear fields, flags and plain variables
written inline, a memo or a sink for every other scalar, then the per-field steps in definition order:
integer lists inline (one unpack, one list display or one C map), strings and the rest as calls, each
behind its condition. The snapshot is then filled through `trusted_snapshot`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from bmsgate.errors import DecodeError, ProtocolError
from bmsgate.model import LIST_FIELDS, PERCENT_FIELDS, BatterySnapshot, DeviceInfo, trusted_snapshot
from bmsgate.protocols.framing import Frame, FrameChecker
from bmsgate.protocols.memo import BoundedMemo
from bmsgate.protocols.transforms import Sink, Step

if TYPE_CHECKING:
    from bmsgate.protocols.compile import CompiledReply
    from bmsgate.protocols.definition import FieldSpec, VariantSpec

__all__ = [
    "POSITIONED",
    "Layout",
    "MemoResult",
    "Shifted",
    "apply_layout",
    "apply_shifted",
    "decode_fresh",
    "run_frames",
]

# Keys of the decode output dict that hold intermediate results, never snapshot fields.
POSITIONED: Final = "#positioned"
EXTRA_LISTS: Final = "#extra_lists"
# The model's field sets as tuples: iterated on every snapshot.
_PERCENT_FIELDS: Final = tuple(sorted(PERCENT_FIELDS))
_LIST_FIELDS: Final = tuple(sorted(LIST_FIELDS))
# Distinct values of a layout selector (firmware versions) a gateway meets: a few.
_CHOICES_MEMO_SIZE: Final = 64

_Items = tuple[tuple[str, Any], ...]
MemoResult = tuple[_Items, _Items | None, _Items, tuple[tuple[str, int], ...]]
"""What one memoized layout decodes: (snapshot items, extras items or None, device items, variable items)."""
Shifted = tuple[tuple[tuple[tuple[str, int], ...], "Layout"], ...]
"""Fields placed after variable-length lists: ((variable, bytes per unit) terms, their sub-layout)."""


def _not_generated(_payload: bytes, _out: dict[str, Any], _device: dict[str, Any], _vars: dict[str, int]) -> None:
    raise RuntimeError("this layout has no generated decoder (build layouts with compile.compile_reply)")


@dataclasses.dataclass(frozen=True, slots=True)
class Layout:
    """The compiled field table of one reply in one layout."""

    min_payload: int
    record: Callable[[bytes, int], tuple[Any, ...]] | None
    """One unpack of every fixed-offset scalar (compiled once; the fast path)."""
    numbers: tuple[tuple[int, str, float | int, float | int, bool], ...]
    """(record index, snapshot field, scale, add, divide): `Linear` numbers, applied inline."""
    casts: tuple[tuple[int, str, type], ...]
    """(record index, snapshot field, bool or int): `Linear` casts of unscaled flags and counters."""
    extras: tuple[tuple[int, str, Any, Any, bool], ...]
    """(record index, extras key, scale, add, divide): `Linear` values into extras (ints stay ints)."""
    sinks: tuple[tuple[int, Sink], ...]
    """(record index, sink) for record scalars with any other transform."""
    steps: tuple[Step, ...]
    """Per-field steps for what the record cannot read (lists, strings, odd sizes, conditions)."""
    encoders: tuple[Any, ...]
    memo: BoundedMemo[bytes, MemoResult] | None = dataclasses.field(default=None, compare=False)
    """Set when the result depends on the frame alone and sets only scalars (device information,
    re-sent from the client's connection cache on every poll): each distinct frame decodes once."""
    shifted: Shifted = ()
    sink_fields: tuple[FieldSpec, ...] = ()
    """The field of each entry of `sinks` (what the generator needs to inline a transform)."""
    run: Step = dataclasses.field(default=_not_generated, compare=False)
    """The layout's generated decode function (`bmsgate.protocols.codegen`): what decoding runs."""
    step_fields: tuple[FieldSpec | None, ...] = ()
    """Per entry of `steps`: the list field it reads where the generator may write the list inline (a list of
    a reply without a frame index), else None (the step is called)."""
    byte_order: str = "<"
    """The layout's `struct` byte order (``<`` or ``>``): what an inlined list of the default order unpacks with."""


def apply_layout(
    layout: Layout, payload: bytes, out: dict[str, Any], device_fields: dict[str, Any], variables: dict[str, int]
) -> None:
    """Run one reply's compiled field table over its payload."""
    layout.run(payload, out, device_fields, variables)


def decode_fresh(layout: Layout, payload: bytes) -> MemoResult:
    """Decode a memoizable layout on its own, frozen into tuples so the memo can share the result."""
    out: dict[str, Any] = {}
    device: dict[str, Any] = {}
    variables: dict[str, int] = {}
    apply_layout(layout, payload, out, device, variables)
    extras = out.pop("extras", None)
    # Item tuples, so that a hit is one C-level dict.update per dict.
    return (
        tuple(out.items()),
        None if extras is None else tuple(extras.items()),
        tuple(device.items()),
        tuple(variables.items()),
    )


def apply_shifted(
    groups: Shifted, payload: bytes, out: dict[str, Any], device_fields: dict[str, Any], variables: dict[str, int]
) -> None:
    """Decode each group of shifted fields from the payload as seen from its (variable) start."""
    for terms, sub in groups:
        offset = 0
        for name, size in terms:
            value = variables.get(name)
            if value is None:
                raise DecodeError(f"var.{name} is not known, so fields shifted by it cannot be placed")
            offset += value * size
        if offset < 0 or len(payload) - offset < sub.min_payload:
            raise DecodeError(
                f"fields shifted by {offset} bytes need {offset + sub.min_payload} payload bytes, "
                f"frame has {len(payload)}"
            )
        sub.run(payload[offset:], out, device_fields, variables)


@dataclasses.dataclass(frozen=True, slots=True)
class FrameRunner:
    """What `run_frames` needs of a compiled protocol (kept together so the hot loop reads locals)."""

    name: str
    checker: FrameChecker
    keyed: bool
    order: Mapping[int, int]
    replies: Mapping[int, CompiledReply]
    payload_offset: int
    trailer: int
    variants: VariantSpec | None
    select: str
    prefix: tuple[str, bytes | tuple[bytes, ...]] | None = None
    """(variable, start markers) of `framing.prefix`: the variable is 0 for a frame starting with a marker,
    1 for a prefixed one, set before the frame's layout is chosen."""
    entries: Mapping[int | None, tuple[CompiledReply, Layout, Mapping[str, Layout]]] = dataclasses.field(init=False)
    """Per framing key (None when the framing has none): (reply, its default layout, its variant layouts)."""
    choose: Mapping[int | None, str] = dataclasses.field(init=False)
    """The layout name per selector value (`VariantSpec.choose`, memoized: a firmware version per battery)."""

    def __post_init__(self) -> None:
        variants = self.variants
        chooser: BoundedMemo[int | None, str] = BoundedMemo(
            variants.choose if variants is not None else _no_variants, _CHOICES_MEMO_SIZE
        )
        object.__setattr__(self, "choose", chooser)
        entries: dict[int | None, tuple[CompiledReply, Layout, Mapping[str, Layout]]] = {
            key: (reply, reply.default, reply.layouts) for key, reply in self.replies.items()
        }
        if not self.keyed:
            # A framing without a key has one reply type: every frame is it.
            entries = {None: next(iter(entries.values()))} if entries else {}
        object.__setattr__(self, "entries", entries)


def _no_variants(_value: int | None) -> str:
    raise RuntimeError("this protocol has a single layout")


def _status_error(runner: FrameRunner, frame: Frame) -> ProtocolError:
    if frame.key is not None:
        return ProtocolError(f"{runner.name}: the BMS answered reply {frame.key:#04x} with an error status")
    return ProtocolError(f"{runner.name}: the BMS answered with an error status")


def _in_request_order(runner: FrameRunner, frames: list[Frame]) -> list[Frame]:
    """The frames sorted by their reply's place in the requests; stable (numbered frames keep their order)."""
    order, unknown = runner.order, len(runner.order)
    ranks = [order.get(frame.key, unknown) if frame.key is not None else 0 for frame in frames]
    return [frame for _, _, frame in sorted(zip(ranks, range(len(ranks)), frames, strict=True))]


def run_frames(
    runner: FrameRunner,
    frames: Iterable[Frame | bytes | bytearray],
    out: dict[str, Any],
    device_fields: dict[str, Any],
    variables: dict[str, int],
    variant: str | None,
) -> bool:
    """Decode the frames, in the definition's request order, into the three dicts; False if none is a reply.

    The first pass checks raw frames and notices whether they arrived in request order (almost always);
    the second decodes each with its layout: the generated function, or the memo of a constant frame.
    """
    check = runner.checker.check
    order = runner.order if runner.keyed else None
    unknown_rank = len(runner.order)
    checked: list[Frame] = []
    previous = -1
    in_order = True
    for item in frames:
        frame: Frame = item if item.__class__ is Frame else check(bytes(item))  # type: ignore[arg-type]
        if not frame[2]:  # status_ok
            raise _status_error(runner, frame)
        if order is not None:
            key = frame[1]
            rank = order.get(key, unknown_rank) if key is not None else 0
            if rank < previous:
                in_order = False
            previous = rank
        checked.append(frame)
    if not in_order:
        checked = _in_request_order(runner, checked)
    decoded_any = False
    offset = runner.payload_offset
    stop = -runner.trailer if runner.trailer else None
    variants = runner.variants
    select = runner.select
    choose = runner.choose
    entries = runner.entries
    keyed = runner.keyed
    prefix = runner.prefix
    for frame in checked:
        entry = entries.get(frame[1] if keyed else None)
        if entry is None:
            continue
        reply, layout, layouts = entry
        raw = frame[0]
        if prefix is not None:
            variables[prefix[0]] = 0 if raw.startswith(prefix[1]) else 1
        if variants is not None:
            layout = layouts[variant or choose[variables.get(select)]]
        memo = layout.memo
        if memo is None:
            payload = raw[offset:stop]
            if len(payload) < layout.min_payload:
                raise _too_short(runner, reply, layout, len(payload))
            decoded_any = True
            layout.run(payload, out, device_fields, variables)
            continue
        size = len(raw) - offset - runner.trailer
        if size < layout.min_payload:
            raise _too_short(runner, reply, layout, max(0, size))
        decoded_any = True
        memo_out, memo_extras, memo_device, memo_variables = memo[raw]
        if memo_out:
            out.update(memo_out)
        if memo_extras is not None:
            extras = out.get("extras")
            if extras is None:
                extras = out["extras"] = {}
            extras.update(memo_extras)
        if memo_device:
            device_fields.update(memo_device)
        if memo_variables:
            variables.update(memo_variables)
    return decoded_any


def _too_short(runner: FrameRunner, reply: CompiledReply, layout: Layout, size: int) -> DecodeError:
    return DecodeError(
        f"{runner.name}: reply {reply.spec.name} has {size} payload bytes, needs at least {layout.min_payload}"
    )


def place_positioned(
    name: str, out: dict[str, Any], variables: Mapping[str, int], limits: Mapping[str, str | None]
) -> None:
    """Turn items placed by frame number into ordered lists; a missing frame is an error."""
    for target, items in out.pop(POSITIONED).items():
        limit = limits.get(target)
        size = variables.get(limit, max(items) + 1 if items else 0) if limit else (max(items) + 1 if items else 0)
        missing = [position for position in range(size) if position not in items]
        if missing:
            raise DecodeError(f"{name}: {target} item {missing[0] + 1} is missing (its frame did not arrive)")
        values = [items[position] for position in range(size)]
        if target.startswith("extras."):
            out.setdefault(EXTRA_LISTS, {}).setdefault(target[7:], []).extend(values)
        else:
            out.setdefault(target, []).extend(values)


def numbered_keys(key: tuple[str, int]) -> tuple[str, ...]:
    """``NAME_1`` .. ``NAME_count``: the extras keys of a list decoded into extras."""
    name, count = key
    return tuple(f"{name}_{number}" for number in range(1, count + 1))


def build_snapshot(
    name: str,
    out: dict[str, Any],
    info: DeviceInfo | None,
    battery_id: str,
    timestamp: float | None,
    device: DeviceInfo | None,
    anonymous: DeviceInfo,
) -> BatterySnapshot:
    """The snapshot from the decoded values; impossible percentages are a `DecodeError`."""
    get = out.get
    for target in _PERCENT_FIELDS:
        value = get(target)
        if value is not None and not 0.0 <= value <= 100.0:
            # A percentage outside 0..100 is impossible content, not a reading to pass on.
            raise DecodeError(f"{name}: {target} of {value:g} % is impossible")
    for target in _LIST_FIELDS:
        items = get(target)
        if items is not None:
            out[target] = tuple(items)
    if "balancing_cells" in out:
        out["balancing_cells"] = tuple(sorted(out["balancing_cells"]))
    if "alarms" in out:
        out["alarms"] = frozenset(out["alarms"])
    if info is not None and device is not None:
        info = info.merged_over(device)
    if "extras" not in out:
        out["extras"] = {}
    out["battery_id"] = battery_id
    out["timestamp"] = time.time() if timestamp is None else timestamp
    out["protocol"] = name
    out["device"] = info or device or anonymous
    # Every key of `out` is a snapshot field by now (definition targets are validated; the
    # intermediate keys were popped), which is what the trusted constructor requires.
    return trusted_snapshot(out)
