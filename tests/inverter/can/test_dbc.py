"""Our DBC reader and bit packer, checked against cantools (the reference) and against what it must refuse."""

from __future__ import annotations

import importlib.resources
import random
import re

import cantools
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import DefinitionError
from bmsgate.inverter.can.dbc import load_dbc_text
from bmsgate.inverter.can.definition import profile_definition
from bmsgate.inverter.can.profiles import compile_profile

DATA = importlib.resources.files("bmsgate").joinpath("data/can")
SHIPPED_DBC = sorted(entry.name for entry in DATA.iterdir() if entry.name.endswith(".dbc"))
HEADER = 'VERSION ""\n\nNS_ :\n\tCM_\n\tBA_DEF_\n\nBS_:\n\nBU_: BMS INV\n\n'


def _optional(value: float | None) -> float | None:
    return None if value is None else float(value)


@pytest.mark.parametrize("filename", SHIPPED_DBC)
def test_every_shipped_dbc_reads_as_cantools_reads_it_and_packs_the_same_bytes(filename: str) -> None:
    text = DATA.joinpath(filename).read_text(encoding="utf-8")
    ours = load_dbc_text(text, source=filename)
    reference = cantools.database.load_string(text, database_format="dbc", strict=True)
    assert isinstance(reference, cantools.database.can.Database)
    assert sorted(ours.messages) == sorted(message.frame_id for message in reference.messages)
    rng = random.Random(filename)
    for expected in reference.messages:
        message = ours.message(expected.frame_id)
        assert (message.name, message.length, message.is_extended) == (
            expected.name,
            expected.length,
            bool(expected.is_extended_frame),
        )
        assert sorted(signal.name for signal in message.signals) == sorted(s.name for s in expected.signals)
        for signal in message.signals:
            other = expected.get_signal_by_name(signal.name)
            assert (signal.length, signal.signed, signal.big_endian) == (
                other.length,
                bool(other.is_signed),
                other.byte_order == "big_endian",
            )
            assert (signal.scale, signal.offset, signal.unit) == (
                float(other.scale),
                float(other.offset),
                other.unit or "",
            )
            assert (signal.minimum, signal.maximum) == (_optional(other.minimum), _optional(other.maximum))
        for _ in range(50):
            raw = {signal.name: rng.randint(signal.raw_min, signal.raw_max) for signal in message.signals}
            data = message.encode_raw(raw)
            assert data == bytes(expected.encode(dict(raw), scaling=False, strict=False))
            assert message.decode_raw(data) == raw
            physical = expected.decode(data, decode_choices=False, scaling=True)
            assert isinstance(physical, dict)
            # decode_choices=False: every value is a number, never a choice name.
            numbers = {name: float(value) for name, value in physical.items()}  # type: ignore[arg-type]
            assert message.decode(data) == pytest.approx(numbers)


def test_big_endian_signals_run_from_their_start_bit_into_the_next_byte() -> None:
    text = (
        HEADER
        + 'BO_ 785 Status: 4 BMS\n SG_ voltage : 7|16@0+ (0.1,0) [0|0] "V" INV\n SG_ t : 23|8@0- (1,0) [0|0] "" INV\n'
    )
    message = load_dbc_text(text, source="t.dbc").message(785)
    assert message.encode_raw({"voltage": 0x1234, "t": -2}) == bytes([0x12, 0x34, 0xFE, 0x00])
    assert message.decode_raw(bytes([0x12, 0x34, 0xFE, 0x00])) == {"voltage": 0x1234, "t": -2}


def test_sections_without_bits_are_skipped_even_with_multi_line_strings_and_extended_ids_are_read() -> None:
    text = (
        HEADER
        + 'BO_ 2147484497 Limits: 2 BMS\n SG_ a : 0|16@1+ (1,0) [0|0] "" INV\n\n'
        + 'CM_ SG_ 2147484497 a "first line\nsecond \\"quoted\\" line";\n'
        + 'BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;\nBA_ "GenMsgCycleTime" BO_ 2147484497 1000;\n'
        + 'VAL_ 2147484497 a 0 "off" 1 "on" ;\n'
    )
    message = load_dbc_text(text, source="t.dbc").message(0x351)
    assert message.is_extended
    assert message.encode_raw({"a": 0xBEEF}) == b"\xef\xbe"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('BO_ 849 L: 2 BMS\n SG_ a : 0|16@1+ (1,0) [0|0] "" BMS\n SG_ b : 8|8@1+ (1,0) [0|0] "" BMS\n', "overlaps"),
        ('BO_ 849 L: 2 BMS\n SG_ a : 8|16@1+ (1,0) [0|0] "" BMS\n', "does not fit in 2 bytes"),
        ('BO_ 849 L: 2 BMS\n SG_ a : 15|16@0+ (1,0) [0|0] "" BMS\n', "does not fit in 2 bytes"),
        ('BO_ 849 L: 2 BMS\n SG_ a M : 0|8@1+ (1,0) [0|0] "" BMS\n', "multiplexed signals are not supported"),
        ('BO_ 849 L: 2 BMS\n SG_ a : 0|8@1+ (1,0) [0|0] "" BMS\nSIG_VALTYPE_ 849 a : 1;\n', "floating point"),
        ('BO_ 849 L: 2 BMS\n SG_ a : 0|8@2+ (1,0) [0|0] "" BMS\n', "byte order must be 0 or 1"),
        ('BO_ 849 L: 2 BMS\n SG_ a : 0|8@1+ (1,0) [0|0] "" BMS\nBO_ 849 M: 1 BMS\n', "frame id 0x351 twice"),
        ('BO_ 849 L: 2 BMS\n SG_ a : 0|8@1+ (1;0) [0|0] "" BMS\n', r"line 12: expected ','"),
        ("BO_ 849 L: 2 BMS\n SG_ a : 0|8@1+ (1,0) [0|0] ~ BMS\n", r"line 12: unexpected '~ BMS"),
        ('BO_ 849 L: 2 BMS\nCM_ "never closed"\n', "line 12: CM_ without its closing ';'"),
        ("BO_ 849 L: 2 BMS\nWHATEVER\n", "line 12: unexpected 'WHATEVER'"),
        ('BO_ 849 L: 2 BMS\n SG_ a : -5|8@1+ (1,0) [0|0] "" BMS\n', "start bit -5"),
        ('BO_ 849 L: 2 BMS\n SG_ a : 0|8@1+ (1,0) [1e999|100] "" BMS\n', "expected a finite number"),
        ('BO_ 849 L: 2 BMS\n SG_ a : 0|8@1+ (1e999,0) [0|0] "" BMS\n', "expected a finite number"),
        ("BO_ " + "9" * 5000 + " L: 2 BMS\n", "is too long"),
        ("BO_ 4096 L: 2 BMS\n", "frame id 4096 is not a CAN id"),
        ("BO_ -1 L: 2 BMS\n", "frame id -1 is not a CAN id"),
        (f"BO_ {0x80000000 | 0x20000000} L: 2 BMS\n", "is not a CAN id"),
    ],
)
def test_what_cantools_strict_mode_refuses_or_this_reader_does_not_know_is_a_definition_error(
    body: str, reason: str
) -> None:
    with pytest.raises(DefinitionError, match=reason) as info:
        load_dbc_text(HEADER + body, source="mine.dbc")
    assert info.value.source == "mine.dbc"
    assert "invalid DBC file" in str(info.value)


def test_encoding_a_missing_or_out_of_range_value_is_a_programming_error() -> None:
    text = HEADER + 'BO_ 849 L: 2 BMS\n SG_ a : 0|8@1- (1,0) [0|0] "" BMS\n SG_ b : 8|8@1+ (1,0) [0|0] "" BMS\n'
    message = load_dbc_text(text, source="t.dbc").message(849)
    assert message.encode_raw({"a": -128, "b": 255}) == b"\x80\xff"
    with pytest.raises(ValueError, match="no value for b"):
        message.encode_raw({"a": 1})
    with pytest.raises(ValueError, match=r"a = 128 does not fit -128\.\.127"):
        message.encode_raw({"a": 128, "b": 0})
    with pytest.raises(ValueError, match="1 bytes, the message has 2"):
        message.decode_raw(b"\x00")


_PYLON_SPEC = yaml.safe_load(DATA.joinpath("pylon.yaml").read_text(encoding="utf-8"))
_PYLON_DBC = DATA.joinpath(str(_PYLON_SPEC["dbc"])).read_text(encoding="utf-8")
_NUMBERS = [match.span() for match in re.finditer(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", _PYLON_DBC)]
_ODD_NUMBERS = st.sampled_from(
    ["-5", "-1", "1e999", "-1e999", "9" * 5000, "4096", "4294967296", "0", "65", "513", "1.5"]
)
_ODD_TEXT = st.sampled_from(["|", "@", "(", ")", "[", "]", '"', ";", ":", " ", "\n", "SG_ ", "BO_ ", "M ", "CM_ "])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(_NUMBERS) - 1), _ODD_NUMBERS), max_size=4),
    st.lists(st.tuples(st.integers(0, len(_PYLON_DBC)), st.integers(0, 4), _ODD_TEXT), max_size=3),
)
def test_a_mangled_dbc_in_a_profile_is_a_definition_error_or_a_profile(
    numbers: list[tuple[int, str]], edits: list[tuple[int, int, str]]
) -> None:
    # A pushed pack's profile carries its DBC text: whatever it holds, compiling refuses it cleanly or works.
    chosen = dict(numbers)
    pieces, last = [], 0
    for index, (start, end) in enumerate(_NUMBERS):
        if index in chosen:
            pieces += [_PYLON_DBC[last:start], chosen[index]]
            last = end
    text = "".join([*pieces, _PYLON_DBC[last:]])
    for position, cut, piece in edits:
        at = min(position, len(text))
        text = text[:at] + piece + text[at + cut :]
    try:
        compile_profile(profile_definition({**_PYLON_SPEC, "dbc_text": text}, source="fuzz.yaml"), source="fuzz.yaml")
    except DefinitionError:
        pass


def test_candb_plus_plus_pseudo_message_of_unattached_signals_is_skipped_as_cantools_skips_it() -> None:
    text = HEADER + (
        'BO_ 849 L: 2 BMS\n SG_ a : 0|8@1+ (1,0) [0|0] "" BMS\n'
        'BO_ 3221225472 VECTOR__INDEPENDENT_SIG_MSG: 0 Vector__XXX\n SG_ loose : 0|8@1+ (1,0) [0|0] "" Vector__XXX\n'
    )
    ours = load_dbc_text(text, source="candb.dbc")
    reference = cantools.database.load_string(text, database_format="dbc", strict=True)
    assert isinstance(reference, cantools.database.can.Database)
    assert sorted(ours.messages) == sorted(message.frame_id for message in reference.messages) == [849]
