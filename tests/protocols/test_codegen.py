"""The generated per-layout decoders: a hostile definition can put text anywhere and still run no code."""

from __future__ import annotations

import io
import math
import operator
import os
import random
import tokenize
import types
from pathlib import Path
from typing import Any, Final
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.catalog import Kind, default_catalog
from bmsgate.errors import BmsgateError, DecodeError, DefinitionError
from bmsgate.model import Alarm
from bmsgate.protocols import codegen, decode, get_protocol
from bmsgate.protocols.codegen import check_source
from bmsgate.protocols.compile import compile_reply
from bmsgate.protocols.compiled import compile_definition
from bmsgate.protocols.decode import Layout
from bmsgate.protocols.definition import definition_from_mapping

_CANARY = "BMSGATE_CODEGEN_CANARY"


def _payloads(tmp_path: Path) -> list[str]:
    """Texts that would run code if any of them became source text (each one in a different quoting)."""
    touch = f"__import__('pathlib').Path({str(tmp_path / 'pwned')!r}).touch()"
    env = f"__import__('os').environ.__setitem__({_CANARY!r}, '1')"
    return [
        f"'); {touch} #",
        f'"); {env} #',
        f"\n{touch}\n",
        f'"""\n{env}\n"""',
        f"{{{env}}}",
        f"0 or {touch}",
    ]


def _hostile(tmp_path: Path) -> dict[str, Any]:
    evil = _payloads(tmp_path)
    variant = evil[0]
    # Target names that are template words or builtins, were they ever written into the source.
    fields: list[dict[str, Any]] = [
        {"target": "var.out", "at": 0, "type": "u8"},
        {"target": "var.payload", "at": 0, "type": "u8"},
        {"target": "extras.exec", "at": 1, "type": "u16", "scale": 0.5, "add": -1},
        {"target": "extras.eval", "at": 3, "type": "u8", "map": {0: evil[1], 1: evil[2], 2: evil[3]}},
        {"target": "extras.decode_layout", "at": 3, "type": "u8", "map": {2: evil[4]}, "variants": [variant]},
        {"target": "charge_enabled", "at": 4, "type": "u8", "bit": 0},
        {"target": "discharge_enabled", "at": 4, "type": "u8", "bit": 1, "invert": True},
        {"target": "device.model", "at": 5, "type": "str", "size": 6},
        {"target": "device.production_date", "at": 5, "type": "str", "size": 6, "date_format": "%y%m%d" + evil[5]},
        {"target": "device.software_version", "at": 11, "type": "u8", "version": "nibbles"},
        {"target": "alarms", "at": 12, "type": "u16", "flags": {0: "cell_overvoltage"}},
        {"target": "balancing_cells", "at": 14, "type": "u16", "cells": 1},
        {"target": "cell_voltages", "at": 16, "type": "u16", "count": "var.payload", "scale": 0.001},
        {"target": "extras.import", "at": 20, "type": "str", "size": 4, "variants": [variant]},
    ]
    return {
        "name": "hostile",
        "title": evil[0],
        "manufacturer": evil[1],
        "description": evil[2],
        "references": evil,
        "framing": {"start": "AA", "length": {"offset": 1, "add": 2}, "payload_offset": 2},
        "requests": [{"name": "poll", "frame": "AA 00", "reply": None}],
        "variants": {"select": "var.out", "default": variant, "choices": {variant: {"max": 10}, "other": {"min": 11}}},
        "replies": {1: {"name": evil[3], "fields": fields}},
    }


def _layouts(definition: Any) -> list[Layout]:
    found: list[Layout] = []
    for key, spec in definition.replies.items():
        reply = compile_reply(
            key,
            spec,
            endian=definition.endian,
            source=definition.source,
            variant_names=tuple(definition.variants.choices),
            payload_slice=(2, 0),
        )
        for layout in (reply.default, *reply.layouts.values()):
            found.append(layout)
            found.extend(sub for _terms, sub in layout.shifted)
    return found


def _names(code: types.CodeType) -> set[str]:
    return {*code.co_names, *code.co_varnames, *code.co_freevars, *code.co_cellvars}


def test_hostile_text_in_every_field_stays_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_CANARY, raising=False)
    evil = _payloads(tmp_path)
    definition = definition_from_mapping(_hostile(tmp_path))
    protocol = compile_definition(definition)
    payload = bytes([2, 0x00, 0x10, 2, 0b01, *b"240315", 0x21, 0x00, 0x01, 0x00, 0x03, 0x0C, 0xE4, 0x0C, 0xE5])
    payload += b"ab\x00\x00"
    frame = bytes([0xAA, len(payload)]) + payload
    snapshot = decode(protocol, [frame], timestamp=0.0)

    assert _CANARY not in os.environ
    assert not (tmp_path / "pwned").exists()
    # The texts arrived as values, unchanged, where the definition sent them.
    assert snapshot.extras == {"exec": 7.0, "eval": evil[3], "decode_layout": evil[4], "import": "ab"}
    assert snapshot.device.manufacturer == evil[1]
    assert snapshot.device.model == "240315"
    assert snapshot.device.production_date is None  # the hostile format matches nothing
    assert snapshot.device.software_version == "2.1"
    assert (snapshot.charge_enabled, snapshot.discharge_enabled) == (True, True)
    assert snapshot.alarms == {Alarm.CELL_OVERVOLTAGE}
    assert snapshot.balancing_cells == (1, 2)
    assert snapshot.cell_voltages == pytest.approx((3.300, 3.301))

    # Nothing from the file reached the generated code objects: their constants are the template's
    # own (None, 0, 1) and their names are template words or generated ones.
    layouts = _layouts(definition)
    assert layouts
    for layout in layouts:
        code = layout.run.__code__
        assert set(code.co_consts) <= {None, 0, 1}
        assert not any(name.startswith(("exec", "eval", "import", "__")) for name in _names(code))
        assert layout.run.__globals__["__builtins__"] == {}
        # Definition text is reachable only as bound objects (targets as dict keys), never as code.
        bound = {value for value in layout.run.__globals__.values() if isinstance(value, str)}
        assert not bound & set(evil)


@pytest.mark.parametrize(
    "source",
    [
        "def decode_layout(payload, out, device, variables):\n    out['x'] = 1\n",
        "def decode_layout(payload, out, device, variables):\n    out[_k0] = 2\n",
        "def decode_layout(payload, out, device, variables):\n    exec(_k0)\n",
        "def decode_layout(payload, out, device, variables):\n    import os\n",
        "def decode_layout(payload, out, device, variables):\n    out[_k0] = 0.5\n",
        "def decode_layout(payload, out, device, variables):\n    out[_k0] = f'{_k1}'\n",
    ],
)
def test_the_source_check_refuses_anything_but_template_tokens(source: str) -> None:
    with pytest.raises(ValueError, match="unexpected"):
        check_source(source)


def _interpret(layout: Layout, payload: bytes, out: dict[str, Any], device: dict[str, Any], variables: Any) -> None:
    # The table interpreter the generated functions replaced: every field through its own sink.
    if layout.record is not None:
        values = layout.record(payload, 0)
        for index, name, scale, add, divide in layout.numbers:
            out[name] = (values[index] + add) / scale + 0.0 if divide else values[index] * scale + add
        for index, sink in layout.sinks:
            sink(values[index], out, device, variables)
        for index, name, cast in layout.casts:
            out[name] = cast(values[index])
        for index, name, scale, add, divide in layout.extras:
            value = (values[index] + add) / scale + 0.0 if divide else values[index] * scale + add
            out.setdefault("extras", {})[name] = value
    for step in layout.steps:
        step(payload, out, device, variables)
    for terms, sub in layout.shifted:
        if any(name not in variables for name, _size in terms):
            raise DecodeError("unknown shift")
        offset = sum(variables[name] * size for name, size in terms)
        if offset < 0 or len(payload) - offset < sub.min_payload:
            raise DecodeError("short")
        _interpret(sub, payload[offset:], out, device, variables)


def _outcome(run: Any, layout: Layout, payload: bytes, variables: dict[str, int]) -> Any:
    out: dict[str, Any] = {}
    device: dict[str, Any] = {}
    mine = dict(variables)
    try:
        run(layout, payload, out, device, mine)
    except Exception as exc:  # the same failure on both sides is the expected outcome
        return type(exc).__name__
    return out, device, mine


@pytest.mark.parametrize("name", default_catalog().names(Kind.PROTOCOL))
def test_generated_layouts_decode_what_the_field_tables_say(name: str) -> None:
    definition = get_protocol(name).definition
    variant_names = tuple(definition.variants.choices) if definition.variants else ()
    generator = random.Random(name)
    framing = definition.framing
    checked = decoded = 0
    for key, spec in definition.replies.items():
        reply = compile_reply(
            key,
            spec,
            endian=definition.endian,
            source=definition.source,
            variant_names=variant_names,
            payload_slice=(framing.payload_offset, framing.trailer_size),
        )
        for layout in (reply.default, *reply.layouts.values()):
            for _ in range(200):
                size = layout.min_payload + generator.randrange(0, 80)
                payload = bytes(generator.getrandbits(8) for _ in range(size))
                # Variables other replies set (cell and sensor counts, firmware versions), small or absent.
                variables = {var: generator.randrange(0, 40) for var in ("cell_count", "ntc_count", "software_major")}
                if generator.random() < 0.2:
                    variables = {}
                generated = _outcome(lambda lay, *rest: lay.run(*rest), layout, payload, variables)
                assert generated == _outcome(_interpret, layout, payload, variables)
                checked += 1
                decoded += isinstance(generated, tuple)
    assert decoded > checked // 4  # many random payloads decode: the comparison is about values too


@settings(max_examples=300, deadline=None)
@given(
    raw=st.integers(min_value=-(2**31), max_value=2**32 - 1),
    scale=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
)
def test_list_multiplier_is_exactly_the_linear_transform(raw: int, scale: float) -> None:
    # `compile._multiplier` maps operator.mul(raw, scale) over list values in place of `raw * scale + 0.0`.
    mine, theirs = operator.mul(raw, scale), raw * scale + 0.0
    assert repr(mine) == repr(theirs)


# -- every value kind that reaches the generator, hostile ---------------------------------------------------

# Names a definition may legally use (``[a-z][a-z0-9_]*``) that are template words, keywords or builtins:
# harmless as data, fatal were they ever spliced into the source.
_NAME_TRAPS: Final = (
    "out",
    "payload",
    "device",
    "variables",
    "extras",
    "value",
    "get",
    "update",
    "bit_count",
    "decode_layout",
    "def",
    "return",
    "lambda",
    "import",
    "exec",
    "eval",
    "compile",
    "open",
    "globals",
    "none",
    "true",
    "k0",
    "r0",
)
_BUILTINS_THAT_RUN_CODE: Final = (eval, exec, compile, __import__, open, getattr, setattr, globals)


def _recorded_sources() -> tuple[list[str], Any]:
    """A stand-in for `codegen.check_source` that keeps every generated text (and still checks it)."""
    texts: list[str] = []

    def record(source: str) -> None:
        texts.append(source)
        check_source(source)

    return texts, mock.patch.object(codegen, "check_source", record)


def _generated_functions(protocol: Any) -> list[Any]:
    layouts: list[Layout] = []
    for reply in protocol._replies.values():  # the compiled layouts are what is inspected
        for layout in (reply.default, *reply.layouts.values()):
            layouts.append(layout)
            layouts.extend(sub for _terms, sub in layout.shifted)
    return [layout.run for layout in layouts]


def _assert_template_only(texts: list[str], functions: list[Any], hostile: list[str], numbers: list[float]) -> None:
    assert texts, "no layout was generated: the test would prove nothing"
    for text in texts:
        # No definition text and no definition number made it into the source.
        assert not any(piece in text for piece in hostile if len(piece) > 3)
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        literals = {token.string for token in tokens if token.type == tokenize.NUMBER}
        assert literals <= {"0", "1"}  # every definition number is a bound constant, never a literal
        assert not {token.string for token in tokens if token.type == tokenize.STRING}
        assert not {repr(number) for number in numbers if number not in {0, 1}} & literals
    for function in functions:
        code = function.__code__
        assert set(code.co_consts) <= {None, 0, 1}
        assert function.__globals__["__builtins__"] == {}
        bound = list(function.__globals__.values())
        assert not any(value is builtin for value in bound for builtin in _BUILTINS_THAT_RUN_CODE)


def _every_kind(tmp_path: Path) -> tuple[dict[str, Any], list[str], list[float]]:
    """A definition that puts hostile names, texts and numbers into every field property codegen reads."""
    evil = _payloads(tmp_path)
    numbers = [1e300, -7.25e-300, 123456789.5, -0.0, 2.0**53 + 1, 98765.4321, 4096.0, 1e-9, 77.7]
    fields: list[dict[str, Any]] = [
        # Linear numbers (multiplied, divided, odd constants) into the snapshot, extras and variables.
        {"target": "voltage", "at": 0, "type": "u16", "scale": numbers[0], "add": numbers[1]},
        {"target": "current", "at": 2, "type": "s16", "scale": 1 / numbers[6], "add": numbers[2]},
        {"target": "soc", "at": 4, "type": "u8", "scale": 0.5, "add": numbers[3]},
        {"target": "design_capacity", "at": 5, "type": "s32", "scale": -1 / numbers[5]},
        {"target": "cycles", "at": 9, "type": "u16"},
        *(
            {"target": f"extras.{name}", "at": 11, "type": "u16", "scale": numbers[7], "add": numbers[8]}
            for name in _NAME_TRAPS[:8]
        ),
        *({"target": f"var.{name}", "at": 13, "type": "u8"} for name in _NAME_TRAPS[8:]),
        {"target": "var.bits", "at": 14, "type": "u16", "popcount": True},
        # Flags, inverted flags, status codes, maps of every value type.
        {"target": "charge_enabled", "at": 16, "type": "u8", "bit": 7},
        {"target": "discharge_enabled", "at": 16, "type": "u8", "one_of": [3, 250, 17]},
        {"target": "heating", "at": 16, "type": "u8", "bit": 2, "invert": True},
        {
            "target": f"extras.{_NAME_TRAPS[16]}",
            "at": 17,
            "type": "u8",
            "map": {0: evil[0], 1: numbers[0], 2: -(2**70), 3: True, 4: evil[5]},
        },
        {"target": "extras.mapped_bit", "at": 17, "type": "u8", "bit": 1, "map": {0: evil[1], 1: evil[2]}},
        {"target": "alarms", "at": 18, "type": "u16", "flags": {0: "cell_overvoltage", 15: "short_circuit"}},
        {"target": "alarms", "at": 20, "type": "u8", "codes": {7: "front_end_fault", 200: "battery_full"}},
        {"target": "balancing_cells", "at": 21, "type": "u16", "cells": 999},
        # Absent markers, sign-magnitude and difference numbers.
        {"target": "balance_current", "at": 23, "type": "u16", "absent": [65535, 12345], "scale": 0.001},
        {
            "target": "mosfet_temperature",
            "at": 25,
            "type": "u16",
            "sign_magnitude": {"sign_bit": 15, "magnitude_bits": 14},
            "scale": 0.1,
        },
        {"target": "remaining_capacity", "at": 27, "type": "u32", "difference": True, "scale": 0.01},
        {
            "target": "extras.sign_char_value",
            "at": 27,
            "type": "u24",
            "sign_char": {"positive": [0x2B, 0x00], "negative": [0x2D, 0xFF]},
            "scale": numbers[7],
        },
        # Device values: versions, packed dates, strings with a hostile date format.
        {"target": "device.software_version", "at": 31, "type": "u8", "version": "nibbles"},
        {"target": "device.hardware_version", "at": 32, "type": "u16", "version": "major_minor"},
        {
            "target": "device.production_date",
            "at": 34,
            "type": "u16",
            "date": {"year": [15, 9], "month": [8, 5], "day": [4, 0], "year_add": 1999},
        },
        {"target": "device.model", "at": 36, "type": "str", "size": 8},
        {"target": "extras.when_text", "at": 36, "type": "str", "size": 8, "date_format": evil[3]},
        # Lists (fixed, variable, limited) and fields after them, shifted by a decoded count.
        {"target": "temperatures", "at": 44, "type": "s8", "count": 2, "add": -40, "absent": [127]},
        {"target": "cell_voltages", "at": 46, "type": "u16", "count": "var.k0", "limit": "var.r0", "scale": 0.001},
        {"target": "extras.after", "at": 46, "type": "u8", "shift": {"var.k0": 2}, "scale": numbers[4]},
        # Conditional on a variable range with extreme bounds.
        {
            "target": "full_capacity",
            "at": 9,
            "type": "u16",
            "when": {"var": "var.none", "min": -(2**63), "max": 2**63},
            "scale": 0.1,
        },
    ]
    definition = {
        "name": "hostile-kinds",
        "title": evil[4],
        "manufacturer": evil[2],
        "framing": {"start": "AA", "length": {"offset": 1, "add": 2}, "payload_offset": 2},
        "requests": [{"name": evil[1][:20] or "poll", "frame": "AA 00", "reply": None}],
        "replies": {1: {"name": evil[0], "fields": fields}},
    }
    return definition, evil, numbers


def test_hostile_values_of_every_kind_stay_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_CANARY, raising=False)
    mapping, evil, numbers = _every_kind(tmp_path)
    texts, recording = _recorded_sources()
    with recording:
        protocol = compile_definition(definition_from_mapping(mapping))
    payload = bytearray(64)
    payload[13] = 2  # var.k0 (and every var.NAME at 13): two cells, so 'after' sits 4 bytes on
    payload[46:50] = bytes([0x0C, 0xE4, 0x0C, 0xE5])
    payload[50] = 9
    payload[17] = 4
    payload[36:44] = b"JK-BMS\x00\x00"
    frame = bytes([0xAA, len(payload)]) + payload
    snapshot = decode(protocol, [frame], timestamp=0.0)

    assert _CANARY not in os.environ
    assert not (tmp_path / "pwned").exists()
    assert snapshot.extras[_NAME_TRAPS[16]] == evil[5]  # a map value arrives as the text it is
    assert snapshot.extras["after"] == 9 * numbers[4]
    assert snapshot.cell_voltages == pytest.approx((3.300, 3.301))
    assert snapshot.device.model == "JK-BMS"
    assert snapshot.device.manufacturer == evil[2]
    _assert_template_only(texts, _generated_functions(protocol), evil, numbers)


@pytest.mark.parametrize(
    ("field", "where"),
    [
        ({"target": "alarms", "at": 0, "type": "u8", "flags": {0: "__import__('os').system('true')"}}, "flags"),
        ({"target": "alarms", "at": 0, "type": "u8", "codes": {1: "cell_overvoltage'); exec('1"}}, "codes"),
        ({"target": "extras.a b", "at": 0, "type": "u8"}, "target"),
        ({"target": "extras.x]=0;exec(1)#", "at": 0, "type": "u8"}, "target"),
        ({"target": "var.__class__", "at": 0, "type": "u8"}, "target"),
        ({"target": "voltage", "at": 0, "type": "u8;exec", "scale": 1}, "type"),
        ({"target": "voltage", "at": 0, "type": "u8", "scale": "1; exec('x')"}, "scale"),
        ({"target": "voltage", "at": 0, "type": "u8", "add": "__import__('os')"}, "add"),
        ({"target": "voltage", "at": "0+exec('1')", "type": "u8"}, "at"),
        ({"target": "charge_enabled", "at": 0, "type": "u8", "bit": "0)or(exec('1')"}, "bit"),
        ({"target": "voltage", "at": 0, "type": "u8", "when": {"var": "var.x)or exec(1", "min": 0}}, "when"),
        ({"target": "cell_voltages", "at": 0, "type": "u8", "count": "var.n+exec(1)"}, "count"),
        ({"target": "extras.v", "at": 0, "type": "u8", "version": "nibbles'+exec('1"}, "version"),
        # Numbers that would overflow or poison a value at decode time (found by the fuzz test below).
        ({"target": "var.n", "at": 0, "type": "u64", "scale": 9.740987338056976e299}, "beyond any finite"),
        ({"target": "cycles", "at": 0, "type": "u8", "scale": math.inf}, "finite"),
        ({"target": "voltage", "at": 0, "type": "u8", "add": math.nan}, "finite"),
        ({"target": "cell_voltages", "at": 0, "type": "u16", "count": 2, "scale": 2.2e-309}, "too small"),
        ({"target": "voltage", "at": 0, "type": "u8", "scale": 2.3e-308, "add": 4}, "too small"),
        # Map values the target cannot hold (a text into a variable or a percentage).
        ({"target": "var.n", "at": 0, "type": "u8", "map": {0: "'); exec('1') #"}}, "whole numbers"),
        ({"target": "soc", "at": 0, "type": "u8", "map": {0: "{__import__('os')}"}}, "numbers"),
        ({"target": "charge_enabled", "at": 0, "type": "u8", "map": {0: 1}}, "true/false"),
    ],
)
def test_hostile_names_and_numbers_are_refused_before_codegen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: dict[str, Any], where: str
) -> None:
    monkeypatch.delenv(_CANARY, raising=False)
    mapping = {
        "name": "hostile-refused",
        "title": "t",
        "framing": {"start": "AA", "length": {"offset": 1, "add": 2}, "payload_offset": 2},
        "requests": [{"name": "poll", "frame": "AA 00", "reply": None}],
        "replies": {1: {"name": "r", "fields": [field]}},
    }
    texts, recording = _recorded_sources()
    with recording, pytest.raises(DefinitionError, match=where):
        compile_definition(definition_from_mapping(mapping))
    assert not texts  # refused by validation: the generator never saw it
    assert _CANARY not in os.environ


_HOSTILE_TEXT: Final = st.sampled_from(
    [
        "'); __import__('os').environ.__setitem__('BMSGATE_CODEGEN_CANARY', '1') #",
        '"""\n__import__("os").environ["BMSGATE_CODEGEN_CANARY"] = "1"\n"""',
        "{__import__('os')}",
        "\\n exec('1')",
        "\x00\r\n\t",
    ]
) | st.text(max_size=12)
_NUMBER: Final = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 0.5, -0.0, 1e-300, 1e300]),
)
_NAME: Final = st.sampled_from(_NAME_TRAPS) | st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_INTEGER_TYPE: Final = st.sampled_from(["u8", "s8", "u16", "s16", "u24", "u32", "s32", "u64", "s64"])


@st.composite
def _hostile_field(draw: st.DrawFn) -> dict[str, Any]:
    at = draw(st.integers(min_value=0, max_value=40))
    kind = draw(st.sampled_from(["linear", "bit", "map", "alarms", "codes", "string", "list", "device", "absent"]))
    scalar_target = draw(
        st.sampled_from(["voltage", "current", "soc", "cycles", "charge_enabled"])
        | _NAME.map(lambda name: f"extras.{name}")
        | _NAME.map(lambda name: f"var.{name}")
    )
    field: dict[str, Any] = {"target": scalar_target, "at": at, "type": draw(_INTEGER_TYPE)}
    if kind == "linear":
        field |= {"scale": draw(_NUMBER), "add": draw(_NUMBER)}
    elif kind == "bit":
        field |= {"bit": draw(st.integers(min_value=0, max_value=7)), "invert": draw(st.booleans())}
    elif kind == "map":
        values = st.one_of(_HOSTILE_TEXT, _NUMBER, st.booleans())
        field["map"] = draw(st.dictionaries(st.integers(min_value=0, max_value=300), values, max_size=4))
    elif kind == "alarms":
        names = st.sampled_from(["cell_overvoltage", "short_circuit"]) | _HOSTILE_TEXT
        field = {"target": "alarms", "at": at, "type": "u16"}
        field["flags"] = draw(st.dictionaries(st.integers(min_value=0, max_value=15), names, max_size=3))
    elif kind == "codes":
        names = st.sampled_from(["front_end_fault", "battery_full"]) | _HOSTILE_TEXT
        field = {"target": "alarms", "at": at, "type": "u8"}
        field["codes"] = draw(st.dictionaries(st.integers(min_value=0, max_value=255), names, max_size=3))
    elif kind == "string":
        target = draw(st.sampled_from(["device.model", "device.name"]) | _NAME.map(lambda name: f"extras.{name}"))
        field = {"target": target, "at": at, "type": "str", "size": draw(st.integers(min_value=1, max_value=8))}
        if draw(st.booleans()):
            field["date_format"] = draw(_HOSTILE_TEXT)
    elif kind == "list":
        # A var.NAME count needs a field that sets it: mostly fixed counts, so that most examples compile.
        count = draw(st.integers(min_value=1, max_value=4) | st.just("var.exec"))
        field = {"target": "cell_voltages", "at": at, "type": "u16", "count": count, "scale": draw(_NUMBER)}
    elif kind == "device":
        version = draw(st.sampled_from(["nibbles", "byte_tenths", "major_minor"]))
        field = {"target": "device.software_version", "at": at, "type": "u16", "version": version}
    else:
        field["absent"] = draw(st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=3))
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        field["when"] = {"var": "var.exec", "min": draw(st.integers()), "max": draw(st.integers())}
    return field


@settings(max_examples=150, deadline=None)
@given(
    fields=st.lists(_hostile_field(), min_size=1, max_size=6).map(
        lambda fields: [{"target": "var.exec", "at": 0, "type": "u8"}, *fields]
    ),
    title=_HOSTILE_TEXT,
    payload=st.binary(min_size=40, max_size=100) | st.binary(max_size=40),
)
def test_fuzzed_hostile_definitions_never_reach_the_source(
    fields: list[dict[str, Any]], title: str, payload: bytes
) -> None:
    os.environ.pop(_CANARY, None)
    mapping = {
        "name": "hostile-fuzz",
        "title": title,
        "manufacturer": title,
        "framing": {"start": "AA", "length": {"offset": 1, "add": 2}, "payload_offset": 2},
        "requests": [{"name": "poll", "frame": "AA 00", "reply": None}],
        "replies": {1: {"name": title or "r", "fields": fields}},
    }
    texts, recording = _recorded_sources()
    with recording:
        try:
            protocol = compile_definition(definition_from_mapping(mapping))
        except DefinitionError:
            assert not texts or all(_CANARY not in text for text in texts)
            return
    hostile = [title, *(str(value) for field in fields for value in (field.get("map") or {}).values())]
    numbers = [value for field in fields for value in (field.get("scale"), field.get("add")) if value is not None]
    _assert_template_only(texts, _generated_functions(protocol), hostile, numbers)
    frame = bytes([0xAA, len(payload)]) + payload
    try:
        decode(protocol, [frame], timestamp=0.0)
    except BmsgateError:
        pass  # a clear error of ours for a payload the fields do not fit
    assert _CANARY not in os.environ


_LIST_FORMS: Final = [(1.0, 0.0), (0.001, 0.0), (0.1, -273.1), (-0.01, 0.0), (2.5, 0.0), (2.5, 1.0), (-3.0, 0.5)]
"""(scale, add) of every list transform: identity, exact divisor, shifted divisor, negative divisor, multiplier,
general linear (the forms `compile._scaler` and the inlined lists distinguish)."""


def _list_definition() -> dict[str, Any]:
    fields: list[dict[str, Any]] = []
    at = 0
    for form, (scale, add) in enumerate(_LIST_FORMS):
        for limit in ({"limit": "var.n"}, {}):
            common = {"scale": scale, "add": add, **limit}
            fields += [
                {"target": "cell_voltages", "at": at, "type": "u16", "count": 6, **common},
                {"target": f"extras.list{form}", "at": at + 12, "type": "s16", "count": 5, **common},
                {"target": "temperatures", "at": at + 22, "type": "s16", "count": 1, "absent": [7], **common},
                {"target": "temperatures", "at": at + 24, "type": "u8", "count": 2, **common},
                {
                    "target": "temperatures",
                    "at": at + 26,
                    "type": "s16",
                    "count": 1,
                    "when": {"var": "var.n", "min": 3},
                    **common,
                },
                {"target": "cell_voltages", "at": at + 28, "type": "u16", "count": "var.m", **common},
                {"target": f"extras.counted{form}", "at": at + 28, "type": "s16", "count": "var.m", **common},
            ]
            at += 40
    for form, (scale, add) in enumerate(_LIST_FORMS):
        # Lists to the end of the payload, wherever it ends.
        fields.append(
            {"target": f"extras.rest{form}", "at": at, "type": "u16", "count": "rest", "scale": scale, "add": add}
        )
    fields.append(
        {"target": "cell_voltages", "at": at, "type": "s16", "count": "rest", "scale": 0.001, "limit": "var.n"}
    )
    return {
        "name": "lists",
        "title": "inlined lists",
        "framing": {"start": "AA", "length": {"offset": 1, "add": 2}, "payload_offset": 2},
        "requests": [{"name": "count", "frame": "AA 00", "reply": None}],
        "replies": {
            1: {"name": "lists", "fields": fields},
            2: {
                "name": "count",
                "fields": [{"target": "var.n", "at": 0, "type": "u8"}, {"target": "var.m", "at": 1, "type": "s8"}],
            },
        },
    }


def test_inlined_lists_decode_what_their_steps_decode() -> None:
    definition = definition_from_mapping(_list_definition(), source="lists")
    (layout,) = [
        layout
        for key, spec in definition.replies.items()
        if key == 1
        for layout in [
            compile_reply(key, spec, endian="little", source="lists", variant_names=(), payload_slice=(2, 0)).default
        ]
    ]
    assert any(field is not None for field in layout.step_fields)  # the lists are written inline
    generator = random.Random(7)
    decoded = 0
    for _ in range(400):
        size = layout.min_payload + generator.randrange(0, 40)
        payload = bytes(generator.choice((0, 7, 255, generator.getrandbits(8))) for _ in range(size))
        variables = {} if generator.random() < 0.2 else {"n": generator.randrange(-3, 9)}
        if generator.random() < 0.9:
            variables["m"] = generator.randrange(-2, 12)  # at most 12 fit the last group; more is too short
        generated = _outcome(lambda lay, *rest: lay.run(*rest), layout, payload, variables)
        assert generated == _outcome(_interpret, layout, payload, variables)
        if isinstance(generated, tuple):
            # Equal floats could still differ in sign or type: the representations agree too.
            assert repr(generated) == repr(_outcome(_interpret, layout, payload, variables))
            decoded += 1
    assert 100 < decoded < 380  # both the values and the errors (unknown or too large counts) are compared
