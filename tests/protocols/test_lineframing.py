"""Delimited-text line framing (``text: lines``): CSV lines of declared kinds read by column, bounded."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DefinitionError, FrameError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.lineframing import LineFrameAssembler, frame_of_line, to_wire

from .family_frames import LITHIONICS

LITHIONICS_PROTOCOL = get_protocol("lithionics")
FRAMING = LITHIONICS_PROTOCOL.definition.framing
STREAM = LITHIONICS.replies["primary"][0] + LITHIONICS.replies["status"][0]
PRIMARY = b"1399,350,350,350,349,55,48,-3,99,000000"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed(*chunks: bytes) -> tuple[LineFrameAssembler, list[bytes]]:
    assembler = LineFrameAssembler(FRAMING)
    return assembler, [frame.raw for chunk in chunks for frame in assembler.feed(chunk)]


def _slots(frame: bytes) -> list[int]:
    return [int.from_bytes(frame[at : at + 4], "big", signed=True) for at in range(2, len(frame) - 2, 4)]


def test_each_line_of_a_kind_becomes_a_frame_keyed_by_its_kind() -> None:
    assembler, (primary, status) = _feed(STREAM)
    assert primary[:2] == b"#\x01" and status[:2] == b"#\x02"
    assert _slots(primary) == [1399, 350, 350, 350, 349, 55, 48, -300, 99, 0]
    assert _slots(status) == [31900, 6391]
    assert assembler.stats.noise_bytes == len(b"ERROR\r\n")  # a line of no kind is noise, not an error
    assert assembler.stats.rejected == 0


@given(cuts=st.lists(st.integers(1, len(STREAM) - 1), max_size=20, unique=True))
@FUZZ
def test_any_split_into_notifications_gives_the_same_frames(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert _feed(*[STREAM[low:high] for low, high in itertools.pairwise(bounds)])[1] == _feed(STREAM)[1]


@pytest.mark.parametrize(
    ("line", "slots"),
    [
        (b"  1399 , 350,350,350,349,55,48,-3.5,99,00FF  ", [1399, 350, 350, 350, 349, 55, 48, -350, 99, 255]),
        (b"1399,350,350,350,349,55,48,+0.07,99,0,extra", [1399, 350, 350, 350, 349, 55, 48, 7, 99, 0]),
        (b"1399,350,350,350,,55,48,-3,99,0", [1399, 350, 350, 350, -(2**31), 55, 48, -300, 99, 0]),
        (b"&,1,2", [200, -(2**31)]),
    ],
)
def test_columns_are_read_exactly_and_an_empty_or_missing_one_is_absent(line: bytes, slots: list[int]) -> None:
    frame = frame_of_line(line, FRAMING)
    assert frame is not None
    assert _slots(frame) == slots


@pytest.mark.parametrize("line", [b"", b"   ", b"ERROR", b"1,2,3", b"&,", b"text", b"#,1,2"])
def test_blank_and_unknown_lines_are_no_frame(line: bytes) -> None:
    assert frame_of_line(line, FRAMING) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (PRIMARY.replace(b"-3", b"-3.125"), "more than the 2 decimals"),
        (PRIMARY.replace(b"-3", b"x"), "not a decimal number"),
        (PRIMARY.replace(b"-3", b"1e3"), "not a decimal number"),
        (PRIMARY.replace(b"-3", b"nan"), "not a decimal number"),
        (PRIMARY.replace(b"000000", b"GG"), "not a hex number"),
        (PRIMARY.replace(b"000000", b"123456789"), "not a hex number of at most 8 digits"),
        (PRIMARY.replace(b"1399", b"2147483648"), "outside the 32-bit range"),
        (PRIMARY.replace(b"1399", b"9" * 30), "more than a number has"),
        (PRIMARY.replace(b"1399", b"1\xff99"), "not ASCII"),
    ],
)
def test_a_line_of_a_kind_that_does_not_fit_is_refused_naming_why(line: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        frame_of_line(line, FRAMING)
    assembler, frames = _feed(line + b"\r\n" + STREAM)
    assert len(frames) == 2  # the refused line costs only itself
    assert reason in (assembler.stats.last_error or "")


def test_an_endless_line_is_dropped_and_the_buffer_stays_bounded() -> None:
    assembler = LineFrameAssembler(FRAMING)
    for _ in range(50):
        assert not assembler.feed(b"1" * 100)
        assert assembler.buffered <= FRAMING.max_length + 2 + 100
    assert "no line end" in (assembler.stats.last_error or "")
    assert len(assembler.feed(b"\r\n" + STREAM)) == 2


def test_a_frame_goes_back_to_its_line() -> None:
    _, frames = _feed(STREAM)
    lines = [to_wire(frame, FRAMING) for frame in frames]
    assert lines == [b"1399,350,350,350,349,55,48,-3.00,99,0\r\n", b"&,0,319.00,6391\r\n"]
    assert _feed(*lines)[1] == frames
    snapshot = LITHIONICS_PROTOCOL.decode([LITHIONICS_PROTOCOL.check_frame(frame) for frame in frames], timestamp=0.0)
    assert snapshot.current == -3.0
    assert snapshot.temperatures == pytest.approx([12.778, 8.889], abs=5e-4)


def _definition(framing: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": "lines-test",
        "title": "lines test",
        "requires": ["absent", "listen", "streaming", "text_lines"],
        "gatt": {"profiles": [{"service": "ff00", "notify": "ff01"}]},
        "match": [{"local_name": "X*"}],
        "framing": framing,
        "requests": [{"name": "read", "frame": "", "reply": 1, "streaming": True}],
        "replies": {
            1: {"name": "read", "fields": [{"target": "voltage", "at": 0, "type": "s32", "absent": [-(2**31)]}]}
        },
    }


_LINES = {"kinds": [{"key": 1, "columns": [{"index": 0}]}]}


@pytest.mark.parametrize(
    ("framing", "reason"),
    [
        ({"start": "23", "key": {"offset": 1}, "lines": _LINES}, "needs 'end'"),
        ({"start": "23", "end": "0A", "lines": _LINES}, "key: {offset: 1}"),
        ({"start": "23", "end": "0A", "key": {"offset": 1}, "fixed_length": 8, "lines": _LINES}, "no 'length'"),
        ({"start": "23", "end": "0A", "key": {"offset": 1}}, "needs 'lines'"),
        (
            {"start": "23", "end": "0A", "key": {"offset": 1}, "lines": {"separator": "1", **_LINES}},
            "not part of a number",
        ),
        (
            {"start": "23", "end": "0A", "key": {"offset": 1}, "lines": {"kinds": [_LINES["kinds"][0]] * 2}},
            "its own key",
        ),
    ],
)
def test_the_definition_says_what_a_lines_framing_lacks(framing: dict[str, Any], reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        definition_from_mapping(_definition({"text": "lines", **framing}))


def test_a_minimal_lines_definition_loads() -> None:
    definition = definition_from_mapping(
        _definition({"text": "lines", "start": "23", "end": "0A", "key": {"offset": 1}, "lines": _LINES})
    )
    assert "text_lines" in (definition.requires or [])


@given(
    data=st.lists(
        st.binary(max_size=120)
        | st.sampled_from([b"\r\n", b"&,", b",", b"-", b".", PRIMARY, b"&,1,319,6391"])
        | st.lists(st.sampled_from(["", "0", "-1", "1.25", "FFFF", "x", "99999999999", "&"]), max_size=12).map(
            lambda columns: ",".join(columns).encode() + b"\r\n"
        ),
        max_size=30,
    )
)
@FUZZ
def test_fuzz_line_streams_raise_only_our_errors(data: list[bytes]) -> None:
    assembler = LineFrameAssembler(FRAMING)
    frames = []
    for chunk in data:
        frames += assembler.feed(chunk)
        assert assembler.buffered <= FRAMING.max_length + 2 + 120
    for frame in frames:
        try:
            LITHIONICS_PROTOCOL.decode([frame], timestamp=0.0)
        except BmsgateError:
            pass


@pytest.mark.parametrize(
    ("stream", "kinds"),
    [
        (b"", []),
        (b"\r\n", []),
        (b"ERROR\r\n", []),
        (b"1,2,3\r\n", []),  # a primary line of too few columns
        (b"&,\r\n", []),
        (b"&,1,2\r\n", [2]),  # a status line alone: aiobmsble waits for a primary line too
        (b"text\r\n", []),
    ],
)
def test_aiobmsble_invalid_streams_give_only_their_valid_lines(stream: bytes, kinds: list[int]) -> None:
    assert [frame[1] for frame in _feed(stream)[1]] == kinds


def test_the_tail_of_an_over_long_line_is_not_read_as_a_line_of_its_own() -> None:
    # One line of 300 characters, in BLE-sized notifications: it is refused whole. Its last 40 characters
    # look like a primary line, but they are not one (the line began 260 characters earlier).
    over_long = b"9" * 260 + PRIMARY
    chunks = [over_long[at : at + 20] for at in range(0, len(over_long), 20)]
    assembler, frames = _feed(*chunks, b"\r\n", STREAM)
    assert [frame[:2] for frame in frames] == [b"#\x01", b"#\x02"]  # only the stream's own two lines
    assert _slots(frames[0])[0] == 1399
    assert assembler.stats.rejected == 1


@pytest.mark.parametrize(
    ("line", "missing"),
    [
        (b",350,350,350,349,55,48,-3,99,000000", "voltage"),
        (b"1399,350,350,350,349,55,48,,99,000000", "current"),
        (b"1399,350,350,350,349,55,48,-3,,000000", "soc"),
    ],
)
def test_an_empty_column_is_no_value_never_a_huge_number(line: bytes, missing: str) -> None:
    _, frames = _feed(line + b"\r\n")
    snapshot = LITHIONICS_PROTOCOL.decode([LITHIONICS_PROTOCOL.check_frame(frame) for frame in frames], timestamp=0.0)
    assert getattr(snapshot, missing) is None
    assert snapshot.cell_voltages == (3.5, 3.5, 3.5, 3.49)


def test_a_value_field_without_the_empty_marker_is_refused_when_the_definition_loads() -> None:
    mapping = LITHIONICS_PROTOCOL.definition.model_dump(mode="python", exclude_defaults=True, by_alias=True)
    for field in mapping["replies"][0x01]["fields"]:
        if field["target"] == "voltage":
            field.pop("absent")
    with pytest.raises(DefinitionError, match=r"voltage\): a lines slot without a value reads as -2147483648"):
        definition_from_mapping(mapping)
