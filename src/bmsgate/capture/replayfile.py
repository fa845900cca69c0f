"""The bmsgate replay file: a recorded BMS conversation as JSON Lines.

The first line is a header object, every further line one record::

    {"format": "bmsgate-replay", "version": 1, "protocol": "jbd", "source": "btsnoop_hci.log"}
    {"t": 0.0, "dir": "tx", "data": "dda50300fffd77"}
    {"t": 0.061, "dir": "rx", "data": "dd03001b17000000..."}

``t`` is seconds since the start of the recording (non-decreasing), ``dir`` is ``tx`` for a host→BMS
write and ``rx`` for one received chunk (one BLE notification), ``data`` the bytes in hex. Blank lines
are skipped and unknown keys ignored, so later minor additions stay readable; a different ``version``
is refused. The full description lives in docs/capture-analysis.md.

:func:`parse_replay` and :func:`format_replay` are pure; :func:`read_replay` and :func:`write_replay`
add the file access around them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Final, Literal

from bmsgate.errors import CaptureError

__all__ = [
    "REPLAY_FORMAT",
    "REPLAY_VERSION",
    "Direction",
    "ReplayCapture",
    "ReplayRecord",
    "format_replay",
    "parse_replay",
    "read_replay",
    "write_replay",
]

REPLAY_FORMAT: Final = "bmsgate-replay"
REPLAY_VERSION: Final = 1

Direction = Literal["tx", "rx"]
_DIRECTIONS: Final[frozenset[str]] = frozenset({"tx", "rx"})


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayRecord:
    """One chunk of the conversation.

    Attributes:
        t: seconds since the start of the recording.
        direction: ``tx`` (host → BMS write) or ``rx`` (BMS → host chunk).
        data: the bytes as they travelled.
    """

    t: float
    direction: Direction
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayCapture:
    """A whole recording.

    Attributes:
        protocol: name of the protocol definition the conversation speaks, when known.
        source: free text saying where the recording came from (file name, tool).
        records: the chunks in time order.
    """

    protocol: str | None
    source: str
    records: tuple[ReplayRecord, ...] = ()

    @property
    def writes(self) -> tuple[ReplayRecord, ...]:
        """The host → BMS records."""
        return tuple(record for record in self.records if record.direction == "tx")

    @property
    def chunks(self) -> tuple[ReplayRecord, ...]:
        """The BMS → host records."""
        return tuple(record for record in self.records if record.direction == "rx")


def parse_replay(content: bytes | str, *, source: str = "<replay>") -> ReplayCapture:
    """Parse the text of a replay file.

    Raises:
        CaptureError: the content is not a valid version-1 replay file; the reason names the line and
            `offset` is the byte offset where that line starts.
    """
    raw = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    header: dict[str, Any] | None = None
    records: list[ReplayRecord] = []
    offset = 0
    for line_number, line in enumerate(raw.splitlines(keepends=True), start=1):
        line_offset, offset = offset, offset + len(line)
        if not line.strip():
            continue
        fail = _LineFailure(source, line_number, line_offset)
        item = _parse_json_object(line, fail)
        if header is None:
            header = _check_header(item, fail)
            continue
        record = _parse_record(item, fail)
        if records and record.t < records[-1].t:
            raise fail(f"time {record.t} goes backwards (previous record at {records[-1].t})")
        records.append(record)
    if header is None:
        raise CaptureError("empty replay file: the header line is missing", source=source, offset=0)
    return ReplayCapture(protocol=header["protocol"], source=header["source"], records=tuple(records))


def format_replay(capture: ReplayCapture) -> str:
    """The text of a replay file for `capture` (one JSON object per line, newline-terminated).

    Raises:
        ValueError: a record has an unknown direction, a negative or non-finite time, or times go
            backwards (a programming error: the recording would not read back).
    """
    lines = [
        json.dumps(
            {
                "format": REPLAY_FORMAT,
                "version": REPLAY_VERSION,
                "protocol": capture.protocol,
                "source": capture.source,
            }
        )
    ]
    previous = 0.0
    for index, record in enumerate(capture.records):
        if record.direction not in _DIRECTIONS:
            raise ValueError(f"record {index}: direction must be 'tx' or 'rx', not {record.direction!r}")
        if not math.isfinite(record.t) or record.t < previous:
            raise ValueError(f"record {index}: time {record.t} is negative, not finite or goes backwards")
        previous = record.t
        lines.append(json.dumps({"t": record.t, "dir": record.direction, "data": record.data.hex()}))
    return "\n".join(lines) + "\n"


def read_replay(path_or_bytes: str | os.PathLike[str] | bytes) -> ReplayCapture:
    """Read a replay file from a path, or parse its content given as bytes.

    Raises:
        CaptureError: the file cannot be read or is not a valid replay file.
    """
    if isinstance(path_or_bytes, bytes):
        return parse_replay(path_or_bytes)
    path = Path(path_or_bytes)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise CaptureError(f"cannot read the file: {exc.strerror or exc}", source=str(path)) from exc
    return parse_replay(content, source=str(path))


def write_replay(path: str | os.PathLike[str], capture: ReplayCapture) -> None:
    """Write `capture` as a replay file (UTF-8, newline line ends).

    Raises:
        CaptureError: the file cannot be written.
    """
    text = format_replay(capture)
    try:
        Path(path).write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        raise CaptureError(f"cannot write the file: {exc.strerror or exc}", source=str(path)) from exc


# -- validation helpers -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _LineFailure:
    """Builds the error for one line, so every message names the same place."""

    source: str
    line_number: int
    offset: int

    def __call__(self, reason: str) -> CaptureError:
        return CaptureError(f"line {self.line_number}: {reason}", source=self.source, offset=self.offset)


def _parse_json_object(line: bytes, fail: _LineFailure) -> dict[str, Any]:
    try:
        item = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(item, dict):
        raise fail(f"expected a JSON object, found {type(item).__name__}")
    return item


def _check_header(item: dict[str, Any], fail: _LineFailure) -> dict[str, Any]:
    if item.get("format") != REPLAY_FORMAT:
        raise fail(f'not a bmsgate replay file (the header needs "format": "{REPLAY_FORMAT}")')
    version = item.get("version")
    if version != REPLAY_VERSION or isinstance(version, bool):
        raise fail(f"unsupported replay version {version!r} (this bmsgate reads version {REPLAY_VERSION})")
    protocol = item.get("protocol")
    if protocol is not None and not isinstance(protocol, str):
        raise fail('"protocol" must be a string or null')
    source = item.get("source", "")
    if not isinstance(source, str):
        raise fail('"source" must be a string')
    return {"protocol": protocol, "source": source}


def _parse_record(item: dict[str, Any], fail: _LineFailure) -> ReplayRecord:
    missing = [key for key in ("t", "dir", "data") if key not in item]
    if missing:
        raise fail(f"record lacks {', '.join(repr(key) for key in missing)}")
    t = item["t"]
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise fail(f'"t" must be a non-negative number of seconds, not {t!r}')
    direction = item["dir"]
    if direction not in _DIRECTIONS:
        raise fail(f'"dir" must be "tx" or "rx", not {direction!r}')
    data = _parse_hex(item["data"], fail)
    return ReplayRecord(t=float(t), direction="tx" if direction == "tx" else "rx", data=data)


def _parse_hex(text: object, fail: _LineFailure) -> bytes:
    if not isinstance(text, str):
        raise fail('"data" must be a hex string')
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise fail(f'"data" is not valid hex: {_preview(text)}') from None
    if not data:
        raise fail('"data" is empty (a record carries at least one byte)')
    return data


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
