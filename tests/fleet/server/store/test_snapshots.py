"""The store's fast snapshot reader is ``from_dict`` / ``to_dict``: the same snapshot or the same refusal, the
same JSON form, for anything a gateway can send."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.fleet.protocol import compact_snapshot
from bmsgate.fleet.server.store.snapshots import full_form, full_form_finite, read_finite_snapshot, read_snapshot
from bmsgate.model import SNAPSHOT_FIELD_KINDS, BatterySnapshot
from tests.strategies import snapshots

_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),  # float() overflows
    st.floats(),  # NaN and infinities included
    st.text(max_size=8),
    st.sampled_from(["cell_overvoltage", "not_an_alarm", "2024-02-30", "2024-01-31"]),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=3), st.booleans()), max_size=4),
    st.dictionaries(
        st.text(max_size=8), st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=4)), max_size=3
    ),
)
_KEYS = st.sampled_from([*SNAPSHOT_FIELD_KINDS, "schema", "power", "unknown", "production_date"])


def _general(data: Any) -> BatterySnapshot | str:
    """What the store did before the fast path: refuse NaN/infinity anywhere, then ``from_dict``."""
    try:
        json.dumps(data, allow_nan=False)
        return BatterySnapshot.from_dict(data)
    except Exception as exc:
        return f"refused: {type(exc).__name__}"


def _fast(data: Any) -> BatterySnapshot | str:
    try:
        return read_finite_snapshot(data)
    except Exception as exc:
        return f"refused: {type(exc).__name__}"


def _same(fast: BatterySnapshot | str, general: BatterySnapshot | str) -> bool:
    if isinstance(fast, str) or isinstance(general, str):
        return isinstance(fast, str) and isinstance(general, str)
    return fast == general and fast.to_dict() == general.to_dict()


@settings(max_examples=200, deadline=None)
@given(snapshots)
def test_a_gateways_compact_form_reads_back_to_the_same_snapshot(snapshot: BatterySnapshot) -> None:
    data = json.loads(json.dumps(compact_snapshot(snapshot)))  # as parsed off the wire
    assert read_snapshot(data) == snapshot == BatterySnapshot.from_dict(data)
    assert _same(_fast(data), _general(data))
    assert full_form(snapshot) == snapshot.to_dict()


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(snapshots, st.dictionaries(_KEYS, _ODD_VALUES, max_size=4), st.sets(_KEYS, max_size=2))
def test_any_changed_snapshot_is_read_or_refused_as_from_dict_does(
    snapshot: BatterySnapshot, changes: dict[str, Any], removed: set[str]
) -> None:
    data = {**compact_snapshot(snapshot), **changes}
    for key in removed:
        data.pop(key, None)
    data = json.loads(json.dumps(data))  # JSON types only, as pydantic hands them to the store
    fast, general = _fast(data), _general(data)
    assert _same(fast, general), (fast, general)
    if isinstance(fast, BatterySnapshot):
        form = full_form_finite(fast)
        try:
            expected: dict[str, Any] | None = json.loads(json.dumps(fast.to_dict(), allow_nan=False))
        except ValueError:
            expected = None  # a derived value overflowed: the old store kept no JSON form either
        assert (None if form is None else json.loads(json.dumps(form))) == expected


@given(st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2)))
def test_what_is_not_a_mapping_is_refused_as_from_dict_does(data: Any) -> None:
    assert _same(_fast(data), _general(data))
