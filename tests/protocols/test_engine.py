"""The engine's internals that the per-protocol tests cannot see: one transform per kind, shareable state."""

from __future__ import annotations

import math
import threading
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsgate.catalog import Kind, default_catalog
from bmsgate.model import SET_FIELDS, BatterySnapshot
from bmsgate.protocols import decode, get_protocol
from bmsgate.protocols.compiled import CompiledProtocol, compile_definition
from bmsgate.protocols.definition import (
    BOOL_TARGETS,
    DEVICE_TARGETS,
    FLOAT_TARGETS,
    INT_TARGETS,
    LIST_TARGETS,
    FieldSpec,
)
from bmsgate.protocols.memo import BoundedMemo
from bmsgate.protocols.transforms import exact_divisor, linear_form, scalar_sink
from bmsgate.runtime.simulation import PackConfig, PackModel, VirtualBms

_RAW_SAMPLES = (0, 1, 7, 200, 4095)


def _inline(kind: str, scale: Any, add: Any, cast: type, divide: bool, raw: int) -> Any:
    # What `decode.apply_layout` does with a record slot of each `Linear` kind.
    if kind == "cast":
        return cast(raw)
    return (raw + add) / scale + 0.0 if divide else raw * scale + add


@pytest.mark.parametrize("name", default_catalog().names(Kind.PROTOCOL))
def test_inline_linear_path_and_sinks_agree(name: str) -> None:
    definition = get_protocol(name).definition
    checked = 0
    for reply in definition.replies.values():
        for field in reply.fields:
            linear = linear_form(field)
            if linear is None or field.count is not None or field.type == "str":
                continue
            sink = scalar_sink(field, "test")
            for raw in _RAW_SAMPLES:
                out: dict[str, Any] = {}
                sink(raw, out, {}, {})
                value = out["extras"][field.target[7:]] if field.target.startswith("extras.") else out[field.target]
                expected = _inline(linear.kind, linear.scale, linear.add, linear.cast, linear.divide, raw)
                assert value == expected
                assert type(value) is type(expected), field.target
            checked += 1
    # Every protocol has linear fields but one, and the text framings, whose value fields all list the
    # empty-slot marker in 'absent' (bmsgate.protocols.textslots), which takes them off the inline path.
    assert checked or name in {"litime"} or definition.framing.text in {"json", "lines"}


def test_memo_is_bounded_and_computes_each_key_once() -> None:
    calls: list[int] = []

    def square(key: int) -> int:
        calls.append(key)
        return key * key

    memo = BoundedMemo(square, 3)
    assert [memo[2], memo[2], memo[3]] == [4, 4, 9]
    assert calls == [2, 3]
    for key in range(10):
        assert memo[key] == key * key
    assert len(memo) <= 3
    with pytest.raises(ValueError, match="at least one"):
        BoundedMemo(square, 0)


def _jk_poll(protocol: CompiledProtocol, name: str) -> list[bytes]:
    pack = PackModel(PackConfig(cells=16, ntc_count=3, name=name))
    bms = VirtualBms(protocol, pack)
    raw: list[bytes] = []
    assembler = protocol.new_assembler()
    for request in protocol.requests:
        for reply in bms.handle_write(request.frame):
            raw += [frame.raw for frame in assembler.feed(reply)]
    return raw


def test_one_compiled_protocol_is_safe_to_share_between_threads() -> None:
    # Fresh compile: its memos start empty, so the threads race on filling them.
    protocol = compile_definition(get_protocol("jk").definition)
    polls = {f"pack-{number}": _jk_poll(protocol, f"pack-{number}") for number in range(6)}
    expected = {name: decode(protocol, frames, battery_id=name, timestamp=0.0) for name, frames in polls.items()}
    protocol = compile_definition(protocol.definition)
    failures: list[str] = []
    start = threading.Barrier(len(polls))

    def run(name: str) -> None:
        start.wait()
        for _ in range(300):
            snapshot: BatterySnapshot = decode(protocol, polls[name], battery_id=name, timestamp=0.0)
            if snapshot != expected[name]:
                failures.append(name)
                return

    threads = [threading.Thread(target=run, args=(name,)) for name in polls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert {snapshot.device.name for snapshot in expected.values()} == set(polls)


def test_simulator_state_writes_only_targets_the_model_defines() -> None:
    state = PackModel(PackConfig()).state()
    writable = FLOAT_TARGETS | INT_TARGETS | BOOL_TARGETS | LIST_TARGETS | DEVICE_TARGETS | SET_FIELDS
    assert {key for key in state if not key.startswith("var.")} <= writable


@given(
    raw=st.integers(min_value=-(1 << 40), max_value=1 << 40),
    digits=st.integers(min_value=1, max_value=4),
    steps_offset=st.integers(min_value=-5000, max_value=5000),
    negative=st.booleans(),
)
def test_decimal_scales_give_the_nearest_double_to_the_decimal_value(
    raw: int, digits: int, steps_offset: int, negative: bool
) -> None:
    scale_text = ("-" if negative else "") + "0." + "0" * (digits - 1) + "1"
    add_text = str(Decimal(steps_offset) * Decimal(scale_text).copy_abs())
    field = FieldSpec(target="voltage", at=0, type="s64", scale=float(scale_text), add=float(add_text))
    linear = linear_form(field)
    assert linear is not None
    assert linear.divide
    exact = float(Decimal(raw) * Decimal(scale_text) + Decimal(add_text))
    value = linear.apply(raw)
    assert value == exact
    assert not (value == 0 and math.copysign(1.0, value) < 0)  # never -0.0


def test_other_scales_keep_the_multiplication() -> None:
    assert exact_divisor(0.3, 0.0) is None
    assert exact_divisor(2.0, 0.0) is None
    assert exact_divisor(0.1, -273.15) is None  # an offset of half a step
    assert exact_divisor(0.1, -273.1) == (10, -2731)
    assert exact_divisor(-0.1, 3000.0) == (-10, -30000)
