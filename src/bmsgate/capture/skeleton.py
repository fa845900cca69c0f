"""A starting protocol definition (YAML) guessed from a capture of unknown traffic.

The guesses: the GATT characteristics used for writes and notifications; the distinct writes as
requests; and, from the replies (the notifications of each exchange joined), the common start bytes,
a common end byte, a length byte (``total = byte + add`` for every reply), a reply key byte, and which
checksum algorithm of the engine fits every reply at the end (before the end byte). Every guess is
commented; fields are left for the user to fill in (see docs/capture-analysis.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from bmsgate.capture.analysis import CaptureReport, Exchange
from bmsgate.protocols.checksums import CHECKSUMS

__all__ = ["FramingGuess", "guess_framing", "skeleton_definition"]

_CHECKSUM_CANDIDATES: Final = ("sum16_complement", "crc16_modbus", "sum16", "sum8", "sum8_complement", "xor8")
_MAX_START: Final = 2
_MAX_LENGTH_OFFSET: Final = 6
_MAX_CHECKSUM_SPAN_START: Final = 5
_MAX_REQUESTS: Final = 16


@dataclasses.dataclass(frozen=True, slots=True)
class FramingGuess:
    """What the messages of one direction have in common.

    Attributes:
        start: common leading bytes (at most two).
        end: common last byte, if any.
        length_offset / length_add: a byte with ``len(message) == byte + add`` in every message.
        fixed_length: the one length of all messages, when they are all equally long.
        key_offset: first byte after the start marker whose value varies between messages.
        checksum: (algorithm, span start, endian) of a checksum that fits every message, placed right
            before the end byte (or at the very end without one).
        messages: how many messages the guess rests on.
    """

    start: bytes
    end: bytes | None
    length_offset: int | None
    length_add: int | None
    fixed_length: int | None
    key_offset: int | None
    checksum: tuple[str, int, str] | None
    messages: int


def guess_framing(messages: Sequence[bytes]) -> FramingGuess:
    """Guess the framing shared by `messages` (each one complete frame)."""
    frames = [message for message in messages if message]
    if not frames:
        return FramingGuess(b"", None, None, None, None, None, None, 0)
    start = _common_prefix(frames)[:_MAX_START]
    end = frames[0][-1:] if len(frames) > 1 and all(f[-1:] == frames[0][-1:] for f in frames) else None
    lengths = {len(frame) for frame in frames}
    length_offset = length_add = None
    if len(lengths) > 1:
        for offset in range(len(start), _MAX_LENGTH_OFFSET):
            if all(len(frame) > offset for frame in frames):
                adds = {len(frame) - frame[offset] for frame in frames}
                if len(adds) == 1:
                    length_offset, length_add = offset, adds.pop()
                    break
    key_offset = None
    if len(start) < min(lengths) and len({frame[len(start)] for frame in frames}) > 1:
        key_offset = len(start)
    return FramingGuess(
        start=start,
        end=end,
        length_offset=length_offset,
        length_add=length_add,
        fixed_length=lengths.pop() if len(lengths) == 1 else None,
        key_offset=key_offset,
        checksum=_guess_checksum(frames, len(end) if end else 0),
        messages=len(frames),
    )


def _common_prefix(frames: Sequence[bytes]) -> bytes:
    prefix = frames[0]
    for frame in frames[1:]:
        size = 0
        while size < min(len(prefix), len(frame)) and prefix[size] == frame[size]:
            size += 1
        prefix = prefix[:size]
    return prefix


def _guess_checksum(frames: Sequence[bytes], trailer: int) -> tuple[str, int, str] | None:
    for name in _CHECKSUM_CANDIDATES:
        algorithm = CHECKSUMS[name]
        endians = ("big", "little") if algorithm.size > 1 else ("big",)
        for span_start in range(_MAX_CHECKSUM_SPAN_START):
            for endian in endians:
                if all(_checksum_fits(frame, algorithm.size, trailer, span_start, endian, name) for frame in frames):
                    return name, span_start, endian
    return None


def _checksum_fits(frame: bytes, size: int, trailer: int, span_start: int, endian: str, name: str) -> bool:
    at = len(frame) - trailer - size
    if at <= span_start:
        return False
    stored = int.from_bytes(frame[at : at + size], "big" if endian == "big" else "little")
    return stored == CHECKSUMS[name].compute(frame[span_start:at])


def skeleton_definition(report: CaptureReport, connection: str | None = None) -> str:
    """A commented YAML protocol definition to start from, for one connection (default: the primary).

    The result follows the definition format the engine loads (docs/protocol-definitions.md); replies
    have empty field tables to fill in.
    """
    chosen = connection or report.primary_connection()
    exchanges = [e for e in report.exchanges if e.connection == chosen]
    writes = [e.request for e in exchanges if e.request is not None]
    replies = [e.response_bytes for e in exchanges if e.responses]
    reply_guess = guess_framing(replies)
    request_guess = guess_framing(list(dict.fromkeys(w.value for w in writes)))
    lines = [
        "# Protocol definition skeleton generated by `bmsgate capture analyze --skeleton`.",
        f"# Source: {report.timeline.source}; connection {chosen or '(none)'}; "
        f"{len(writes)} writes, {len(replies)} replies.",
        "# Every value below is a GUESS from the capture: check each one, then describe the reply fields.",
        "format: 1",
        "name: captured_bms",
        "title: Unknown BMS (from a capture)",
        "endian: big",
        "",
        *_gatt_lines(report, exchanges),
        "",
        *_framing_lines(reply_guess),
        "",
        *_request_lines(exchanges, reply_guess),
        "",
        *_reply_lines(replies, reply_guess),
        "",
        "# Requests as seen (their framing guess, for comparison):",
        *(f"#   {line}" for line in _describe(request_guess)),
    ]
    return "\n".join(lines) + "\n"


def _gatt_lines(report: CaptureReport, exchanges: Sequence[Exchange]) -> list[str]:
    write_uuids = [e.request.uuid for e in exchanges if e.request is not None and e.request.uuid]
    notify_uuids = [r.uuid for e in exchanges for r in e.responses if r.uuid]
    write_handles = sorted({e.request.handle for e in exchanges if e.request is not None})
    notify_handles = sorted({r.handle for e in exchanges for r in e.responses})
    handle_note = f"# handles seen: write {_hex_list(write_handles)}, notify {_hex_list(notify_handles)}"
    if not write_uuids or not notify_uuids:
        return [
            "# GATT: the capture holds no service discovery, so only handles are known; fill in the UUIDs",
            "# (e.g. from `bmsgate scan`/nRF Connect) and uncomment:",
            handle_note,
            "# gatt:",
            "#   profiles:",
            "#     - {service: ffe0, notify: ffe1, write: ffe2}",
        ]
    write_uuid = max(set(write_uuids), key=write_uuids.count)
    notify_uuid = max(set(notify_uuids), key=notify_uuids.count)
    services = {(s.connection, s.uuid): s.service for s in report.handles if s.uuid}
    connection = exchanges[0].connection
    service = services.get((connection, notify_uuid)) or services.get((connection, write_uuid))
    service_text = service or "ffe0  # GUESS: the service was not in the discovery seen"
    return [
        handle_note,
        "gatt:",
        "  profiles:",
        f"    - service: {service_text}",
        f"      notify: {notify_uuid}",
        f"      write: {write_uuid}",
    ]


def _framing_lines(guess: FramingGuess) -> list[str]:
    lines = [f"# Framing guessed from {guess.messages} replies:", "framing:"]
    start = guess.start or b"\x00"
    lines.append(f'  start: "{start.hex(" ").upper()}"' + ("" if guess.start else "  # no common start byte found"))
    if guess.end:
        lines.append(f'  end: "{guess.end.hex().upper()}"')
    if guess.length_offset is not None and guess.length_add is not None:
        lines.append(f"  length: {{offset: {guess.length_offset}, size: 1, add: {guess.length_add}}}")
        lines.append(f"  payload_offset: {guess.length_offset + 1}  # GUESS: payload right after the length byte")
    elif guess.fixed_length is not None:
        lines.append(f"  fixed_length: {guess.fixed_length}  # every reply had this length")
    else:
        lines.append("  fixed_length: 20  # no length byte found: replace with the real length field")
    if guess.key_offset is not None:
        lines.append(f"  key: {{offset: {guess.key_offset}}}  # GUESS: varies between replies")
    if guess.checksum is not None:
        name, span_start, endian = guess.checksum
        size = CHECKSUMS[name].size
        at = -(size + (len(guess.end) if guess.end else 0))
        lines.append(f"  checksum: {{algorithm: {name}, start: {span_start}, end: {at}, at: {at}, endian: {endian}}}")
    else:
        lines.append("  # checksum: none of sum8/sum16/sum16_complement/crc16_modbus/xor8 fits every reply")
    return lines


def _request_lines(exchanges: Sequence[Exchange], guess: FramingGuess) -> list[str]:
    lines = ["requests:"]
    seen: dict[bytes, int | None] = {}
    for exchange in exchanges:
        if exchange.request is None or exchange.request.value in seen:
            continue
        response = exchange.response_bytes
        key = response[guess.key_offset] if guess.key_offset is not None and len(response) > guess.key_offset else None
        seen[exchange.request.value] = key
    if not seen:
        return ["requests:", '  - {name: request_1, frame: "00"}  # no writes seen: replace']
    for index, (frame, key) in enumerate(list(seen.items())[:_MAX_REQUESTS], start=1):
        reply = f", reply: 0x{key:02X}" if key is not None else ""
        lines.append(f'  - {{name: request_{index}, frame: "{frame.hex(" ").upper()}"{reply}}}')
    if len(seen) > _MAX_REQUESTS:
        lines.append(f"  # ... {len(seen) - _MAX_REQUESTS} more distinct writes left out")
    return lines


def _reply_lines(replies: Sequence[bytes], guess: FramingGuess) -> list[str]:
    lines = ["replies:"]
    keys: dict[int, bytes] = {}
    if guess.key_offset is not None:
        for reply in replies:
            if len(reply) > guess.key_offset:
                keys.setdefault(reply[guess.key_offset], reply)
    else:
        keys = {0: replies[0]} if replies else {0: b""}
    for key, example in keys.items():
        lines += [
            f"  0x{key:02X}:",
            f"    name: reply_{key:02x}",
            f"    # example ({len(example)} bytes): {example.hex(' ').upper()}",
            "    fields: []  # e.g. - {target: voltage, at: 0, type: u16, scale: 0.01}",
        ]
    return lines


def _describe(guess: FramingGuess) -> list[str]:
    checksum = "none fits" if guess.checksum is None else f"{guess.checksum[0]} from byte {guess.checksum[1]}"
    return [
        f"start {guess.start.hex(' ').upper() or '-'}, end {guess.end.hex().upper() if guess.end else '-'}, "
        f"length byte {guess.length_offset if guess.length_offset is not None else '-'}, checksum {checksum}"
    ]


def _hex_list(values: Sequence[int]) -> str:
    return ", ".join(f"0x{value:04x}" for value in values) or "none"
