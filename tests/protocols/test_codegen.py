"""The generated per-layout decoders: a hostile definition can put text anywhere and still run no code."""

from __future__ import annotations

import operator
import os
import random
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.catalog import Kind, default_catalog
from bmsgate.errors import DecodeError
from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol
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
