"""The replay file format: round trip, validation errors naming the line, fuzzing."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.capture.replayfile import (
    ReplayCapture,
    ReplayRecord,
    format_replay,
    parse_replay,
    read_replay,
    write_replay,
)
from bmsgate.errors import CaptureError

HEADER = '{"format": "bmsgate-replay", "version": 1, "protocol": "jbd", "source": "unit test"}\n'

SAMPLE = ReplayCapture(
    protocol="jbd",
    source="unit test",
    records=(
        ReplayRecord(0.0, "tx", bytes.fromhex("dda50300fffd77")),
        ReplayRecord(0.05, "rx", bytes.fromhex("dd03001b17000000")),
        ReplayRecord(0.0612345, "rx", bytes.fromhex("77")),
    ),
)


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "poll.jsonl"
    write_replay(path, SAMPLE)
    assert read_replay(path) == SAMPLE
    assert read_replay(str(path)) == SAMPLE
    assert read_replay(path.read_bytes()) == SAMPLE


def test_written_text_is_the_documented_format() -> None:
    lines = format_replay(SAMPLE).splitlines()
    assert json.loads(lines[0]) == {
        "format": "bmsgate-replay",
        "version": 1,
        "protocol": "jbd",
        "source": "unit test",
    }
    assert json.loads(lines[1]) == {"t": 0.0, "dir": "tx", "data": "dda50300fffd77"}
    assert len(lines) == 4


def test_writes_and_chunks_split_by_direction() -> None:
    assert [r.data for r in SAMPLE.writes] == [bytes.fromhex("dda50300fffd77")]
    assert len(SAMPLE.chunks) == 2


def test_null_protocol_blank_lines_and_unknown_keys_are_accepted() -> None:
    text = (
        '{"format": "bmsgate-replay", "version": 1, "protocol": null, "source": "x", "tool": "y"}\n'
        "\n"
        '{"t": 1, "dir": "rx", "data": "AB CD", "note": "hand-edited"}\n'
    )
    capture = parse_replay(text)
    assert capture.protocol is None
    assert capture.records == (ReplayRecord(1.0, "rx", b"\xab\xcd"),)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 0, "header line is missing"),
        ('{"format": "other"}\n', 1, "not a bmsgate replay file"),
        ('{"format": "bmsgate-replay", "version": 2}\n', 1, "unsupported replay version 2"),
        ('{"format": "bmsgate-replay", "version": true}\n', 1, "unsupported replay version"),
        ('{"format": "bmsgate-replay", "version": 1, "protocol": 3}\n', 1, '"protocol"'),
        ('{"format": "bmsgate-replay", "version": 1, "source": 3}\n', 1, '"source"'),
        ("[1, 2]\n", 1, "expected a JSON object"),
        (b"\xff\xfe\n", 1, "not UTF-8"),
        (HEADER + "{oops\n", 2, "not valid JSON"),
        (HEADER + '{"t": 0, "dir": "rx"}\n', 2, "lacks 'data'"),
        (HEADER + '{"t": -1, "dir": "rx", "data": "00"}\n', 2, "non-negative"),
        (HEADER + '{"t": "0", "dir": "rx", "data": "00"}\n', 2, "non-negative"),
        (HEADER + '{"t": 0, "dir": "up", "data": "00"}\n', 2, '"dir"'),
        (HEADER + '{"t": 0, "dir": "rx", "data": "0g"}\n', 2, "not valid hex"),
        (HEADER + '{"t": 0, "dir": "rx", "data": 5}\n', 2, "hex string"),
        (HEADER + '{"t": 0, "dir": "rx", "data": ""}\n', 2, "empty"),
        (
            HEADER + '{"t": 2, "dir": "rx", "data": "00"}\n{"t": 1, "dir": "rx", "data": "00"}\n',
            3,
            "backwards",
        ),
    ],
)
def test_invalid_content_names_the_line(text: str | bytes, line: int, fragment: str) -> None:
    with pytest.raises(CaptureError) as caught:
        parse_replay(text, source="poll.jsonl")
    message = str(caught.value)
    assert fragment in message
    assert message.startswith("poll.jsonl")
    if line:
        assert f"line {line}:" in message
        raw = text.encode() if isinstance(text, str) else text
        assert caught.value.offset == sum(len(part) for part in raw.splitlines(keepends=True)[: line - 1])


def test_missing_file_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot read"):
        read_replay(tmp_path / "absent.jsonl")


def test_unwritable_path_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot write"):
        write_replay(tmp_path / "no" / "such" / "dir.jsonl", SAMPLE)


@pytest.mark.parametrize(
    "record",
    [ReplayRecord(-1.0, "rx", b"\x00"), ReplayRecord(float("nan"), "rx", b"\x00")],
)
def test_format_refuses_records_that_would_not_read_back(record: ReplayRecord) -> None:
    with pytest.raises(ValueError, match="record 0"):
        format_replay(ReplayCapture(protocol=None, source="", records=(record,)))


def test_format_refuses_an_unknown_direction() -> None:
    bad = ReplayRecord(0.0, "up", b"\x00")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction"):
        format_replay(ReplayCapture(protocol=None, source="", records=(bad,)))


records_strategy = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        st.sampled_from(["tx", "rx"]),
        st.binary(min_size=1, max_size=64),
    ),
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(records_strategy, st.one_of(st.none(), st.text(max_size=10)), st.text(max_size=30))
def test_any_valid_capture_round_trips(
    raw_records: list[tuple[float, str, bytes]], protocol: str | None, source: str
) -> None:
    times = sorted(round(t, 6) for t, _, _ in raw_records)
    records = tuple(
        ReplayRecord(t, "tx" if d == "tx" else "rx", data) for t, (_, d, data) in zip(times, raw_records, strict=True)
    )
    capture = ReplayCapture(protocol=protocol, source=source, records=records)
    assert parse_replay(format_replay(capture)) == capture


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_capture_error(content: bytes) -> None:
    with contextlib.suppress(CaptureError):
        parse_replay(content)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_files_raise_only_capture_error(data: st.DataObject) -> None:
    raw = bytearray(format_replay(SAMPLE).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CaptureError):
        parse_replay(bytes(raw))
