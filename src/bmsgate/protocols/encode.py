"""Encoding: snapshot-like state → reply frames (how the simulator speaks every protocol), and commands.

The compiled field tables run backwards: each field's encode step writes its value into the payload,
then the framing (start/end markers, key, status, length, checksum) is filled in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bmsgate.protocols.checksums import CHECKSUMS
from bmsgate.protocols.compile import FRAME, CompiledReply, shift_terms
from bmsgate.protocols.definition import (
    PLACEHOLDER_SIZES,
    ChecksumSpec,
    CommandSpec,
    FramingSpec,
    ProtocolDefinition,
)
from bmsgate.protocols.transforms import EncodeStep, lookup

__all__ = [
    "checksum_ok",
    "encode_frame",
    "encoder_variables",
    "fill_checksum",
    "frame_count",
    "list_starts",
    "mosfet_param",
    "render_template",
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
    """One complete reply frame: the payload from the encoders, wrapped in the framing."""
    payload = bytearray(_payload_size(reply, state, variables))
    index = reply.spec.index
    if index is not None:
        number = frame_index * reply.per_frame if index.numbers == "items" else frame_index
        payload[index.at] = (index.base + number) & 0xFF
    for encoder in encoders:
        encoder(payload, state, variables)
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
    size = reply.min_payload
    for field in reply.sizing_fields:
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
