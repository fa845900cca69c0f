"""The generated reply encoders write exactly what the field-by-field steps write, and run no definition text.

`CompiledProtocol.encode_reply` runs one generated payload encoder per layout (`encodegen.generate_encoder`)
and precomputed framing (`encode.ReplyEncoder`); `_encode_reply_stepwise` is the reference path (every
field's own encode step, then `encode.wrap_payload`). Both must give the same bytes, or fail alike.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import tokenize
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.catalog import Kind, default_catalog
from bmsgate.errors import DefinitionError
from bmsgate.model import Alarm
from bmsgate.protocols import encodegen, get_protocol
from bmsgate.protocols.compiled import CompiledProtocol, compile_definition
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.encodegen import check_encoder_source
from bmsgate.runtime.simulation import PackConfig, PackModel, VirtualBms

from .test_codegen import _BUILTINS_THAT_RUN_CODE, _CANARY, _every_kind, _hostile, _hostile_field, _payloads

_PROTOCOLS = default_catalog().names(Kind.PROTOCOL)
_PACKS = [(4, 1, 1), (16, 3, 2), (24, 2, 3), (32, 8, 4), (8, 0, 5)]
"""(cells, temperature sensors, seed) of the packs every built-in protocol encodes."""


def _outcome(encode: Any, *args: Any, **kwargs: Any) -> Any:
    """The frames an encode gives, or the type of the error it raises."""
    try:
        return encode(*args, **kwargs)
    except Exception as exc:  # the error itself is the outcome compared
        return type(exc)


def _assert_alike(protocol: CompiledProtocol, state: dict[str, Any]) -> int:
    """Every reply, layout, status and frame number encodes alike both ways; returns how many gave frames."""
    encoded = 0
    for key, reply in protocol._replies.items():
        frames = 1 if reply.spec.index is None else 3
        for variant in (None, *protocol.variant_names):
            for status_ok in (True, False):
                for frame_index in range(frames):
                    arguments = {"variant": variant, "status_ok": status_ok, "frame_index": frame_index}
                    fast = _outcome(protocol.encode_reply, key, state, **arguments)
                    reference = _outcome(protocol._encode_reply_stepwise, key, state, **arguments)
                    assert fast == reference, (protocol.name, hex(key), arguments)
                    encoded += isinstance(fast, bytes)
    return encoded


@pytest.mark.parametrize("name", _PROTOCOLS)
def test_every_builtin_reply_encodes_as_its_field_steps_do(name: str) -> None:
    protocol = get_protocol(name)
    encoded = 0
    for cells, sensors, seed in _PACKS:
        pack = PackModel(
            PackConfig(cells=cells, ntc_count=sensors, seed=seed, current_amplitude=40.0, drift_cell=1, drift_rate=200)
        )
        bms = VirtualBms(protocol, pack)
        for _ in range(3):
            pack.advance(400.0)
            encoded += _assert_alike(protocol, bms.state())
    assert encoded  # the comparison compared frames, not only errors


_NUMBERS = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
    st.integers(min_value=-70000, max_value=70000),
    st.sampled_from([0, 0.0, -0.0, 0.5, -0.5, 1.5, 2.5, 65535.5, True, False]),
)


@st.composite
def _states(draw: st.DrawFn, protocol: CompiledProtocol) -> dict[str, Any]:
    """A pack's state with some targets of the protocol's fields replaced by arbitrary values of their kind."""
    cells, sensors = draw(st.integers(1, 32)), draw(st.integers(0, 8))
    pack = PackModel(PackConfig(cells=cells, ntc_count=sensors, seed=draw(st.integers(0, 99))))
    pack.advance(draw(st.floats(0.0, 20000.0)))
    state = VirtualBms(protocol, pack).state()
    fields = [field for reply in protocol.definition.replies.values() for field in reply.fields]
    for field in draw(st.lists(st.sampled_from(fields), max_size=12)) if fields else ():
        target = field.target
        if target == "alarms":
            state[target] = draw(st.sets(st.sampled_from(list(Alarm))))
        elif target == "balancing_cells":
            state[target] = draw(st.lists(st.integers(-2, 70), max_size=8))
        elif target.startswith("var."):
            # Counts the lists do not match, negative ones, none at all.
            state[target] = draw(st.none() | st.integers(-3, 40))
        elif field.count is not None:
            state[target] = draw(st.lists(_NUMBERS, max_size=40))
        elif field.type != "str" and not target.startswith("device."):
            state[target] = draw(st.none() | _NUMBERS)
    return state


@pytest.mark.parametrize("name", _PROTOCOLS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_states_encode_as_the_field_steps_do(name: str, data: st.DataObject) -> None:
    protocol = get_protocol(name)
    _assert_alike(protocol, data.draw(_states(protocol)))


# -- the generated source holds template words only -------------------------------------------------------


def _recorded_encoders() -> tuple[list[str], Any]:
    """A stand-in for `encodegen.check_encoder_source` that keeps every generated text (and still checks it)."""
    texts: list[str] = []

    def record(source: str) -> None:
        texts.append(source)
        check_encoder_source(source)

    return texts, mock.patch.object(encodegen, "check_encoder_source", record)


def _assert_template_only(protocol: CompiledProtocol, texts: list[str], hostile: list[str]) -> None:
    assert texts, "no encoder was generated: the test would prove nothing"
    for text in texts:
        assert not any(piece in text for piece in hostile if len(piece) > 3)
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        assert {token.string for token in tokens if token.type == tokenize.NUMBER} <= {"0", "1"}
        assert not [token for token in tokens if token.type == tokenize.STRING]
    for reply in protocol._replies.values():
        for function in reply.payload_encoders.values():
            code = function.__code__
            assert set(code.co_consts) <= {None, 0, 1, ()}  # () is the template's `value or ()`
            assert function.__globals__["__builtins__"] == {}
            bound = list(function.__globals__.values())
            assert not any(value is builtin for value in bound for builtin in _BUILTINS_THAT_RUN_CODE)
            assert not {value for value in bound if isinstance(value, str)} & set(hostile)


def _hostile_state(evil: list[str]) -> dict[str, Any]:
    """Definition texts as state values too: they must arrive in the frame as data (or fail as data does)."""
    return {
        "voltage": 12.5,
        "current": -3.25,
        "soc": 55,
        "cycles": 7,
        "charge_enabled": True,
        "discharge_enabled": False,
        "heating": True,
        "alarms": {Alarm.CELL_OVERVOLTAGE, Alarm.SHORT_CIRCUIT},
        "balancing_cells": [999, 1000, 3],
        "cell_voltages": [3.3, 3.301],
        "temperatures": [20.5, -4.0],
        "var.k0": 2,
        "var.out": 1,
        "device.model": evil[0][:8],
        "device.software_version": "2.1",
        "device.production_date": dt.date(2024, 3, 15),
        f"extras.{evil[1]}": 3,
    }


def test_hostile_definitions_generate_template_only_encoders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_CANARY, raising=False)
    evil = _payloads(tmp_path)
    every_kind, _evil, _numbers = _every_kind(tmp_path)
    for mapping in (_hostile(tmp_path), every_kind):
        texts, recording = _recorded_encoders()
        with recording:
            protocol = compile_definition(definition_from_mapping(mapping))
        _assert_template_only(protocol, texts, evil)
        state = _hostile_state(evil)
        assert _assert_alike(protocol, state)
    assert _CANARY not in os.environ
    assert not (tmp_path / "pwned").exists()


@settings(max_examples=150, deadline=None)
@given(
    fields=st.lists(_hostile_field(), min_size=1, max_size=6).map(
        lambda fields: [{"target": "var.exec", "at": 0, "type": "u8"}, *fields]
    ),
    values=st.lists(st.none() | _NUMBERS, min_size=4, max_size=4),
    items=st.lists(_NUMBERS, max_size=6),
    count=st.none() | st.integers(-2, 6),
    index=st.none()
    | st.fixed_dictionaries({"at": st.integers(0, 12), "numbers": st.sampled_from(["frames", "items"])}),
)
def test_fuzzed_definitions_encode_as_their_field_steps_do(
    fields: list[dict[str, Any]], values: list[Any], items: list[Any], count: int | None, index: Any
) -> None:
    # Overlapping fields, shared slots, maps, codes, absent markers and conditions at random offsets:
    # whatever order the generated encoder writes in, each step must see what it saw before.
    os.environ.pop(_CANARY, None)
    mapping = {
        "name": "hostile-fuzz",
        "title": "t",
        "framing": {"start": "AA", "length": {"offset": 1, "add": 2}, "payload_offset": 2},
        "requests": [{"name": "poll", "frame": "AA 00", "reply": None}],
        "replies": {1: {"name": "r", "fields": fields}},
    }
    if index is not None:
        # A numbered reply: its number byte may lie under any field (written first, then overwritten or OR-ed).
        mapping["replies"][1]["index"] = index  # type: ignore[index]
        fields.append({"target": "temperatures", "at": 60, "type": "u8", "count": 2})
    try:
        protocol = compile_definition(definition_from_mapping(mapping))
    except DefinitionError:
        return
    state: dict[str, Any] = {"alarms": {Alarm.SHORT_CIRCUIT}, "cell_voltages": items, "var.exec": count}
    for field, value in zip(fields[1:], values, strict=False):
        if field["target"] not in {"alarms", "cell_voltages"} and field["type"] != "str":
            state[field["target"]] = value
    _assert_alike(protocol, state)
    assert _CANARY not in os.environ


@pytest.mark.parametrize(
    "source",
    [
        "def encode_layout(payload, state, variables):\n    value = 'x'\n",
        "def encode_layout(payload, state, variables):\n    value = 2\n",
        "def encode_layout(payload, state, variables):\n    exec(value)\n",
        "def encode_layout(payload, state, variables):\n    value = out\n",  # a decoder word, not an encoder's
    ],
)
def test_the_encoder_source_check_refuses_anything_but_template_tokens(source: str) -> None:
    with pytest.raises(ValueError, match="unexpected"):
        check_encoder_source(source)


@pytest.mark.parametrize(
    "field",
    [
        {"target": "voltage", "at": 3, "type": "u8"},  # overwrites the number
        {"target": "charge_enabled", "at": 3, "type": "u8", "bit": 7},  # ORs into it
        {"target": "alarms", "at": 2, "type": "u16", "flags": {0: "short_circuit"}, "endian": "little"},
        {"target": "extras.mode", "at": 3, "type": "u8", "map": {0: "off"}},
    ],
)
def test_a_field_over_the_frame_number_sees_it_as_the_steps_did(field: dict[str, Any]) -> None:
    # The number byte goes in before every step: a field over it keeps its order against it.
    mapping = {
        "name": "numbered",
        "title": "t",
        "framing": {"start": "AA", "length": {"offset": 1, "add": 2}, "payload_offset": 2},
        "requests": [{"name": "poll", "frame": "AA 00", "reply": None}],
        "replies": {
            1: {
                "name": "r",
                "index": {"at": 3, "numbers": "items"},
                "fields": [field, {"target": "temperatures", "at": 8, "type": "u8", "count": 2}],
            }
        },
    }
    protocol = compile_definition(definition_from_mapping(mapping))
    states = [{}, {"voltage": 0, "charge_enabled": True, "alarms": {Alarm.SHORT_CIRCUIT}, "extras.mode": "off"}]
    for state in states:
        assert _assert_alike(protocol, {**state, "temperatures": [1.0, 2.0, 3.0, 4.0, 5.0]}) == 6
