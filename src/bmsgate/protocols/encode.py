"""Encoding: snapshot-like state → reply frames (how the simulator speaks every protocol), and commands.

The compiled field tables run backwards: each field's encode step writes its value into the payload,
then the framing (start/end markers, key, status, length, checksum) is filled in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bmsgate.protocols.checksums import CHECKSUMS
from bmsgate.protocols.compile import FRAME, CompiledReply, shift_terms
from bmsgate.protocols.definition import (
    PLACEHOLDER_SIZES,
    ChecksumSpec,
    CommandSpec,
    FieldSpec,
    FramingSpec,
    ProtocolDefinition,
)
from bmsgate.protocols.transforms import EncodeStep, lookup

__all__ = [
    "ReplyEncoder",
    "checksum_ok",
    "encode_frame",
    "encoder_variables",
    "fill_checksum",
    "frame_count",
    "list_starts",
    "mosfet_param",
    "render_template",
    "wrap_payload",
]


def encoder_variables(
    reply: CompiledReply, state: Mapping[str, Any], frame_index: int, starts: Mapping[str, int]
) -> dict[str, int]:
    """The ``var.*`` values an encode of `reply` sees: list lengths from the state, then explicit ones."""
    variables: dict[str, int] = {}
    for name, target in reply.count_vars:
        variables.setdefault(name, len(state.get(target) or ()))
    for target, value in state.items():
        if target.startswith("var.") and value is not None:
            variables[target[4:]] = int(value)
    variables[FRAME] = frame_index
    for target, start in starts.items():
        # This reply continues a list that earlier replies of the poll began (cells 9-16 after 1-8).
        variables["@" + target] = start
    return variables


def encode_frame(
    framing: FramingSpec,
    reply: CompiledReply,
    encoders: tuple[EncodeStep, ...],
    state: Mapping[str, Any],
    variables: dict[str, int],
    *,
    status_ok: bool,
    frame_index: int,
) -> bytes:
    """One complete reply frame, field step by field step: the reference the fast `ReplyEncoder` matches."""
    payload = bytearray(_payload_size(reply, state, variables))
    index = reply.spec.index
    if index is not None:
        number = frame_index * reply.per_frame if index.numbers == "items" else frame_index
        payload[index.at] = (index.base + number) & 0xFF
    for encoder in encoders:
        encoder(payload, state, variables)
    return wrap_payload(framing, reply, payload, variables, status_ok=status_ok)


def wrap_payload(
    framing: FramingSpec, reply: CompiledReply, payload: bytearray, variables: Mapping[str, int], *, status_ok: bool
) -> bytes:
    """The payload wrapped in the framing: start/end markers, key, status, length and checksum."""
    if framing.fixed_length is not None:
        total = framing.fixed_length
    else:
        total = framing.payload_offset + len(payload) + framing.trailer_size
    # A prefixed layout (`framing.prefix`, chosen by its variable) is written behind zero bytes where a real
    # pack puts its address; its fields count on the whole frame, so only the marker and key move.
    at = framing.prefix.size if framing.prefix is not None and variables.get(framing.prefix.var[4:]) else 0
    frame = bytearray(total)
    frame[at : at + len(framing.start)] = framing.start
    body_end = total - framing.trailer_size if framing.trailer_size else total
    room = body_end - framing.payload_offset
    frame[framing.payload_offset : framing.payload_offset + min(room, len(payload))] = payload[:room]
    if framing.key is not None and framing.key.in_replies:
        key_at = framing.key.offset + at
        frame[key_at : key_at + framing.key.size] = reply.key.to_bytes(framing.key.size, "big")
    if framing.status is not None:
        frame[framing.status.offset] = framing.status.ok[0] if status_ok else 0x80
    if framing.length is not None:
        length = framing.length
        value = total - length.add
        if length.counts == "text":
            markers = len(framing.start) + len(framing.end or b"")
            value = markers + 2 * (total - markers) - length.add
        frame[length.offset : length.offset + length.size] = value.to_bytes(length.size, length.endian)
    if framing.end is not None:
        frame[total - len(framing.end) :] = framing.end
    # A reply whose key is its start marker (one of `starts`: ECO-WORTHY's A1/A2) keeps it.
    marker = framing.start
    if framing.starts and framing.key is not None and framing.key.in_replies and framing.key.offset < len(marker):
        written = bytes(frame[at : at + len(marker)])
        marker = written if written in framing.starts else marker
    # Fixed-length frames keep the start marker even when the payload covers offset 0. Only then does the
    # checksum run twice (as before the marker went back); a checksum per frame was a tenth of an encode.
    if frame[at : at + len(marker)] != marker:
        fill_checksum(frame, framing.checksum)
        frame[at : at + len(marker)] = marker
    fill_checksum(frame, framing.checksum)
    return bytes(frame)


class ReplyEncoder:
    """One reply's encoding with everything the state does not change worked out once.

    `encode_frame` looks each framing property up (some are computed) and sizes, counts and writes field
    by field on every call; this runs the reply's generated payload encoder (`CompiledReply.payload_encoders`)
    and the same framing statements over precomputed constants. Framing whose marker moves or is chosen by
    the frame (``prefix``, ``starts``) is wrapped by `wrap_payload` itself.
    """

    __slots__ = (
        "_checksum",
        "_count_vars",
        "_dynamic",
        "_end",
        "_fixed",
        "_framing",
        "_key",
        "_length",
        "_offset",
        "_rechecked",
        "_reply",
        "_size",
        "_start",
        "_starts",
        "_status",
        "_trailer",
        "_wrap",
    )

    def __init__(self, framing: FramingSpec, reply: CompiledReply, starts: Mapping[str, int]) -> None:
        self._framing = framing
        self._reply = reply
        # setdefault in `encoder_variables`: a variable counting two lists is the first one's length.
        self._count_vars = tuple(dict(reversed(reply.count_vars)).items())
        self._starts = tuple(("@" + target, start) for target, start in starts.items())
        self._size, self._dynamic = _fold_sizing(reply)
        self._fixed = framing.fixed_length
        self._offset = framing.payload_offset
        self._trailer = framing.trailer_size
        self._start = framing.start
        self._key = (
            (framing.key.offset, reply.key.to_bytes(framing.key.size, "big"))
            if framing.key is not None and framing.key.in_replies
            else None
        )
        self._status = (framing.status.offset, framing.status.ok[0]) if framing.status is not None else None
        self._length = None
        if framing.length is not None:
            length = framing.length
            markers = len(framing.start) + len(framing.end or b"") if length.counts == "text" else -1
            self._length = (length.offset, length.size, length.add, length.endian, markers)
        self._end = framing.end
        self._checksum = _checksum_filler(framing.checksum)
        # The checksum `wrap_payload` fills before it puts the start marker back is overwritten by the one
        # after; it matters only when the second covers the first's bytes (for some frame length).
        self._rechecked = _reads_itself(framing.checksum)
        self._wrap = framing.prefix is None and not framing.starts

    def variables(self, state: Mapping[str, Any], frame_index: int) -> dict[str, int]:
        """What `encoder_variables` gives (a duplicated count variable: its first list's length)."""
        variables = {name: len(state.get(target) or ()) for name, target in self._count_vars}
        for target, value in state.items():
            # target.startswith("var."), as two comparisons instead of a call per state entry.
            if "var." <= target < "var/" and value is not None:
                variables[target[4:]] = int(value)
        variables[FRAME] = frame_index
        variables.update(self._starts)
        return variables

    def encode(
        self,
        layout: str | None,
        state: Mapping[str, Any],
        variables: dict[str, int],
        *,
        status_ok: bool,
        frame_index: int,
    ) -> bytes:
        """The frame `encode_frame` builds for `layout` (None: the default) from `state` and `variables`."""
        size = self._size
        if self._dynamic:
            size = _sized(size, self._dynamic, state, variables)
        payload = bytearray(size)
        try:
            self._reply.payload_encoders[layout](payload, state, variables)
        except Exception:  # noqa: BLE001 - re-raised (or answered) by the reference path below
            # The generated encoder computes its record's fields before the other steps, so of two fields
            # a state breaks it may meet the later one first: the field steps, in order, say which error.
            reply = self._reply
            encoders = reply.default.encoders if layout is None else reply.layouts[layout].encoders
            fresh = self.variables(state, frame_index)
            return encode_frame(
                self._framing, reply, encoders, state, fresh, status_ok=status_ok, frame_index=frame_index
            )
        if not self._wrap:
            return wrap_payload(self._framing, self._reply, payload, variables, status_ok=status_ok)
        # `wrap_payload` without a prefix or alternative start markers, statement by statement.
        total = self._fixed if self._fixed is not None else self._offset + len(payload) + self._trailer
        frame = bytearray(total)
        start = self._start
        frame[: len(start)] = start
        offset = self._offset
        room = total - self._trailer - offset
        frame[offset : offset + min(room, len(payload))] = payload[:room]
        if self._key is not None:
            key_at, key = self._key
            frame[key_at : key_at + len(key)] = key
        if self._status is not None:
            frame[self._status[0]] = self._status[1] if status_ok else 0x80
        if self._length is not None:
            length_at, length_size, add, endian, markers = self._length
            value = total - add if markers < 0 else markers + 2 * (total - markers) - add
            frame[length_at : length_at + length_size] = value.to_bytes(length_size, endian)
        if self._end is not None:
            frame[total - len(self._end) :] = self._end
        checksum = self._checksum
        if frame[: len(start)] != start:
            if checksum is not None and self._rechecked:
                checksum(frame)
            frame[: len(start)] = start
        if checksum is not None:
            checksum(frame)
        return bytes(frame)


def _reads_itself(spec: ChecksumSpec | None) -> bool:
    """Whether a checksum's covered bytes may include where it is written (any frame length: unknown)."""
    if spec is None:
        return False
    if min(spec.start, spec.end, spec.at) < 0:
        return True
    return spec.start < spec.at + CHECKSUMS[spec.algorithm].size and spec.at < spec.end


def _checksum_filler(spec: ChecksumSpec | None) -> Callable[[bytearray], None] | None:
    """`fill_checksum` for one spec, its algorithm looked up once (None: no checksum)."""
    if spec is None:
        return None
    compute = CHECKSUMS[spec.algorithm].compute
    size = CHECKSUMS[spec.algorithm].size
    endian = spec.endian
    first, stop, at = spec.start, spec.end, spec.at
    text = spec.over == "text"

    def fill(frame: bytearray) -> None:
        length = len(frame)
        low = first if first >= 0 else length + first
        high = stop if stop >= 0 else length + stop
        where = at if at >= 0 else length + at
        covered = frame[low:high]
        value = compute(covered.hex().upper().encode() if text else covered)
        frame[where : where + size] = value.to_bytes(size, endian)

    return fill


def frame_count(reply: CompiledReply, state: Mapping[str, Any], expected: int | None) -> int:
    """Frames that answer one request for an indexed reply: from the count variable, else the list's length."""
    if expected is not None:
        return expected
    first = next(field for field in reply.spec.fields if field.count is not None)
    return max(1, -(-len(lookup(state, first.target) or ()) // reply.per_frame))


def render_template(command: CommandSpec, values: Mapping[str, int], framing: FramingSpec) -> bytes:
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
    fill_checksum(frame, framing.request_checksum or framing.checksum)
    return bytes(frame)


def mosfet_param(bits: Any, *, charge: bool | None, discharge: bool | None) -> int:
    """A command parameter from the desired MOSFET states (None: leave that one alone)."""
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


def checksum_ok(frame: bytes, spec: ChecksumSpec | None) -> bool:
    """Whether `frame` carries a correct checksum by `spec` (True when there is none)."""
    if spec is None:
        return True
    start, end, at = _resolve(spec.start, spec.end, spec.at, len(frame))
    algorithm = CHECKSUMS[spec.algorithm]
    if not 0 <= start <= end <= len(frame) or at + algorithm.size > len(frame):
        return False
    return int.from_bytes(frame[at : at + algorithm.size], spec.endian) == algorithm.compute(
        _covered(frame[start:end], spec)
    )


def _covered(data: bytes | bytearray, spec: ChecksumSpec) -> bytes | bytearray:
    """What the checksum is computed over: the bytes, or their hex text as sent (``over: text``)."""
    return data.hex().upper().encode() if spec.over == "text" else data


def fill_checksum(frame: bytearray, spec: ChecksumSpec | None) -> None:
    """Compute and write the checksum `spec` describes (nothing when there is none)."""
    if spec is None:
        return
    algorithm = CHECKSUMS[spec.algorithm]
    start, end, at = _resolve(spec.start, spec.end, spec.at, len(frame))
    value = algorithm.compute(_covered(frame[start:end], spec))
    frame[at : at + algorithm.size] = value.to_bytes(algorithm.size, spec.endian)


def _resolve(start: int, end: int, at: int, length: int) -> tuple[int, int, int]:
    return (
        start if start >= 0 else length + start,
        end if end >= 0 else length + end,
        at if at >= 0 else length + at,
    )


def list_starts(definition: ProtocolDefinition, order: list[int]) -> dict[int, dict[str, int]]:
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


def _payload_size(reply: CompiledReply, state: Mapping[str, Any], variables: Mapping[str, int]) -> int:
    return _sized(reply.min_payload, reply.sizing_fields, state, variables)


def _fold_sizing(reply: CompiledReply) -> tuple[int, tuple[FieldSpec, ...]]:
    """`_payload_size`'s start with the fields whose share the state cannot change folded in, and the rest."""
    size = reply.min_payload
    dynamic: list[FieldSpec] = []
    for field in reply.sizing_fields:
        fixed = (
            isinstance(field.count, int)
            and not field.shift
            and not (field.type == "str" and field.size == "rest")
            and not field.target.startswith("extras.")
        )
        if fixed:
            size = max(size, field.at + (field.stride or field.item_size) * int(field.count))  # type: ignore[arg-type]
        else:
            dynamic.append(field)
    return size, tuple(dynamic)


def _sized(size: int, fields: tuple[FieldSpec, ...], state: Mapping[str, Any], variables: Mapping[str, int]) -> int:
    for field in fields:
        base = sum(variables.get(name, 0) * step for name, step in shift_terms(field)) if field.shift else 0
        if field.type == "str" and field.size == "rest":
            text = state.get(field.target)
            size = max(size, base + field.at + len(str(text).encode("utf-8")) if text is not None else field.at)
        elif field.count is not None and not (field.target.startswith("extras.") and not field.shift):
            count = _encode_count(field, state, variables)
            stride = field.stride or field.item_size
            size = max(size, base + field.at + stride * count)
        elif field.shift:
            size = max(size, base + field.at + field.item_size)
        elif field.when is not None and field.when.holds(variables.get(field.when.var[4:])):
            size = max(size, field.at + field.item_size)
    return size


def _encode_count(field: Any, state: Mapping[str, Any], variables: Mapping[str, int]) -> int:
    if isinstance(field.count, int):
        return field.count
    values = state.get(field.target) or ()
    if field.count == "rest":
        return len(values)
    return int(variables.get(str(field.count)[4:], len(values)))
