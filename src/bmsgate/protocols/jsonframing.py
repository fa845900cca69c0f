"""JSON text framing (``framing.text: json``): replies that are one JSON object each (sans-IO; engine 5).

Felicity modules answer a request with ``{"CommVer":1,…,"Batt":[[52800],[-1],[null]],…}`` spread over
several notifications. As for hex text (:mod:`bmsgate.protocols.textframing`), the engine works on frames in
one binary form, so this module is the edge between that form and the wire:

- :class:`JsonFrameAssembler` finds each object in the received text (its braces balanced, strings and
  escapes respected), refuses it while it is still text when it is deeper or longer than the definition
  allows, parses it with every number checked (finite, whole, at most :data:`_MAX_DIGITS` digits: no
  quadratic big-integer conversion), and lays the declared members out as the frame
  ``{`` + slots + ``}`` (:mod:`bmsgate.protocols.jsonspec`);
- :func:`to_wire` turns such a frame (a reply the simulator encodes) back into JSON text; requests, which
  are not frames of that form, are sent as written.

Bounds: the buffer never holds more than ``2 × max_length`` bytes; an object is scanned once (the scan
resumes where the last chunk ended); the parser only ever sees text within ``max_length`` and
``max_depth``, so it cannot recurse deeply or build large values. Every failure is a
:class:`~bmsgate.errors.FrameError` naming what is wrong.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any, Final

from bmsgate.errors import FrameError
from bmsgate.protocols.definition import FramingSpec
from bmsgate.protocols.framing import AssemblerStats, BufferedAssembler, Frame, FrameChecker
from bmsgate.protocols.jsonspec import ABSENT, SLOT_SIZE, JsonMember, JsonSpec

__all__ = ["JsonFrameAssembler", "frame_of_object", "to_wire"]

_MAX_DIGITS: Final = 20
"""Longest number text accepted (a slot holds 32 bits; longer text is refused before it is converted)."""
_SLOT: Final = struct.Struct(">i")
_SLOT_MAX: Final = 2**31 - 1
_ABSENT_SLOT: Final = _SLOT.pack(ABSENT)
# Characters that change the scan's state; everything else is skipped by the regular expression.
_STRUCTURAL: Final = re.compile(rb'["\\{}\[\]]')
_OPEN: Final = frozenset(b"{[")
_CLOSE: Final = frozenset(b"}]")
_QUOTE: Final = ord('"')
_BACKSLASH: Final = ord("\\")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a BMS reports")


def _finite_float(text: str) -> float:
    if len(text) > _MAX_DIGITS:
        raise ValueError(f"number {text[:12]}… has more than {_MAX_DIGITS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is not finite")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > _MAX_DIGITS:
        raise ValueError(f"number {text[:12]}… has more than {_MAX_DIGITS} digits")
    return int(text)


def _parse(text: bytes) -> dict[str, Any]:
    """The reply object (FrameError: not UTF-8, not JSON, not an object, a number out of bounds)."""
    try:
        decoded = text.decode("utf-8")
        value = json.loads(decoded, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except UnicodeDecodeError as exc:
        raise FrameError(f"reply text is not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:  # json.JSONDecodeError and the number checks above
        raise FrameError(f"reply is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FrameError("reply is JSON but not an object")
    return value


def _number(value: object, path: str) -> int:
    """One slot's value: a whole number of 32 bits, or ABSENT for null."""
    if value is None:
        return ABSENT
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError(f"{path} is {type(value).__name__}, not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise FrameError(f"{path} is {value}, not a whole number")
        value = int(value)
    if not ABSENT < value <= _SLOT_MAX:
        raise FrameError(f"{path} is {value}, outside the 32-bit range")
    return value


def _text(value: object, path: str, size: int) -> bytes:
    """A text member's bytes: its UTF-8, NUL-padded to `size` (empty for null)."""
    if value is None:
        return bytes(size)
    if not isinstance(value, str):
        raise FrameError(f"{path} is {type(value).__name__}, not a string")
    encoded = value.encode("utf-8", errors="replace")
    if len(encoded) > size or b"\x00" in encoded:
        raise FrameError(f"{path} is {len(encoded)} bytes of text; the definition reads at most {size}, without NULs")
    return encoded.ljust(size, b"\x00")


_MISSING: Final = object()


def _lookup(reply: dict[str, Any], member: JsonMember) -> object:
    value: object = reply.get(member.member, _MISSING)
    for position in member.index:
        if not isinstance(value, list) or position >= len(value):
            return _MISSING
        value = value[position]
    return value


def frame_of_object(reply: dict[str, Any], spec: JsonSpec) -> bytes:
    """The frame ``{`` + slots + ``}`` of a parsed reply object.

    Raises:
        FrameError: a required member is missing, a checked one differs, or a value does not fit its slot.
    """
    out = bytearray(b"{")
    for member in spec.members:
        value = _lookup(reply, member)
        if value is _MISSING:
            if member.required:
                raise FrameError(f"reply has no member {member.path}")
            value = None
        if member.equals is not None:
            if isinstance(value, bool) or value != member.equals:
                raise FrameError(f"{member.path} is {value!r}, not {member.equals} (an unknown protocol version?)")
            continue
        if member.text is not None:
            out += _text(value, member.path, member.text)
            continue
        if member.items is None:
            out += _SLOT.pack(_number(value, member.path))
            continue
        items: list[object] = [] if value is None else value if isinstance(value, list) else [_MISSING]
        if items and items[0] is _MISSING:
            raise FrameError(f"{member.path} is {type(value).__name__}, not a list of numbers")
        if len(items) > member.items:
            raise FrameError(f"{member.path} has {len(items)} items; the definition reads at most {member.items}")
        for position, item in enumerate(items):
            out += _SLOT.pack(_number(item, f"{member.path}[{position}]"))
        out += _ABSENT_SLOT * (member.items - len(items))
    out += b"}"
    return bytes(out)


def to_wire(frame: bytes, framing: FramingSpec) -> bytes:
    """The JSON text of a reply frame ``{`` + slots + ``}``; anything else (a request) as written."""
    spec = framing.json_object
    if spec is None or len(frame) != framing.fixed_length or not frame.startswith(b"{") or not frame.endswith(b"}"):
        return frame
    reply: dict[str, Any] = {}
    at = 1
    for member in spec.members:
        value: object
        if member.equals is not None:
            value = member.equals
        elif member.text is not None:
            value = frame[at : at + member.text].split(b"\x00", 1)[0].decode("utf-8", errors="replace")
        elif member.items is None:
            value = _slot(frame, at)
        else:
            items = [_slot(frame, at + SLOT_SIZE * n) for n in range(member.items)]
            while items and items[-1] is None:  # the unused slots after the list's last item
                items.pop()
            value = items
        at += member.size
        _place(reply, member, value)
    return json.dumps(reply, separators=(",", ":")).encode()


def _slot(frame: bytes, at: int) -> int | None:
    (value,) = _SLOT.unpack_from(frame, at)
    return None if value == ABSENT else int(value)


def _place(reply: dict[str, Any], member: JsonMember, value: object) -> None:
    """Put `value` at the member's path, growing the lists on the way with nulls."""
    if not member.index:
        reply[member.member] = value
        return
    container = reply.setdefault(member.member, [])
    *outer, last = member.index
    for position in outer:
        container.extend([None] * (position + 1 - len(container)))
        if not isinstance(container[position], list):
            container[position] = []
        container = container[position]
    container.extend([None] * (last + 1 - len(container)))
    container[last] = value


class JsonFrameAssembler(BufferedAssembler):
    """Finds the JSON objects in received text and turns each into a frame. One instance per connection."""

    def __init__(self, framing: FramingSpec, *, checker: FrameChecker | None = None) -> None:
        if framing.json_object is None:  # pragma: no cover - FramingSpec validation
            raise ValueError("JsonFrameAssembler needs 'text: json' framing")
        self._spec = framing.json_object
        self._checker = checker or FrameChecker(framing)
        self._ignore = frozenset(framing.ignore_chunks)
        self._max_text = framing.max_length
        self._max_depth = framing.json_object.max_depth
        self._restarts = framing.json_object.chunk_starts_object
        self._buffer = bytearray()
        self._restart()
        self.stats = AssemblerStats()

    def _restart(self) -> None:
        """Forget the scan state (the buffer holds no object's start, or a fresh one at byte 0)."""
        self._scanned = 0
        self._depth = 0
        self._in_string = False

    def reset(self) -> None:
        """Forget any partial object (e.g. before a new request after a timeout)."""
        super().reset()
        self._restart()

    def _reject(self, reason: str) -> None:
        super()._reject(reason)
        self._restart()

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return every frame completed by them (possibly none)."""
        chunk = bytes(chunk)
        if chunk in self._ignore:
            self.stats.junk_chunks += 1
            return []
        buffer = self._buffer
        if self._restarts and buffer and chunk.startswith(b'{"'):
            # A lost notification cut the object before: without this its open lists would swallow the next.
            self.stats.rejected += 1
            self.stats.noise_bytes += len(buffer)
            self.stats.last_error = "a new object began before the last one was complete"
            buffer.clear()
            self._restart()
        buffer += chunk
        frames: list[Frame] = []
        while buffer:
            if not self._scanned:
                start = buffer.find(b"{")
                if start < 0:
                    self.stats.noise_bytes += len(buffer)
                    buffer.clear()
                    break
                if start:
                    self.stats.noise_bytes += start
                    del buffer[:start]
                self._scanned = 1
                self._depth = 1
            end = self._scan()
            if end is None:
                if len(buffer) > self._max_text:
                    self._reject(f"no complete JSON object within {self._max_text} characters")
                    continue
                break
            if end < 0:
                self._reject(f"JSON nested deeper than {self._max_depth} levels")
                continue
            try:
                frame = self._checker.check(frame_of_object(_parse(bytes(buffer[:end])), self._spec))
            except FrameError as exc:
                self._reject(str(exc))
                continue
            del buffer[:end]
            self._restart()
            self.stats.frames += 1
            frames.append(frame)
        return frames

    def _scan(self) -> int | None:
        """Continue scanning the object at byte 0: its end (exclusive), None (incomplete), -1 (too deep)."""
        buffer = self._buffer
        limit = min(len(buffer), self._max_text)
        position = self._scanned
        depth = self._depth
        in_string = self._in_string
        try:
            while position < limit:
                match = _STRUCTURAL.search(buffer, position, limit)
                if match is None:
                    position = limit
                    break
                at = match.start()
                byte = buffer[at]
                position = at + 1
                if in_string:
                    if byte == _BACKSLASH:
                        if position == limit:  # the escaped character is not here yet: rescan the backslash
                            position = at
                            break
                        position += 1
                    elif byte == _QUOTE:
                        in_string = False
                elif byte == _QUOTE:
                    in_string = True
                elif byte in _OPEN:
                    depth += 1
                    if depth > self._max_depth:
                        return -1
                elif byte in _CLOSE:
                    depth -= 1
                    if depth == 0:
                        return position
            return None
        finally:
            self._scanned, self._depth, self._in_string = position, depth, in_string
