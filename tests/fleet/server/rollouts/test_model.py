"""Rollout requests: bad input is refused with our own error naming the field; the store's generation is monotonic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.fleet.server.rollouts.model import RolloutError, RolloutKind, parse_spec
from bmsgate.fleet.server.rollouts.store import RolloutStore
from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.repository import Repository
from tests.fleet.server.rollouts.helpers import PACK

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_KEYS = st.sampled_from(["name", "target", "selection", "options", "kind", "parent", "packs", "software", "groups"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=6) | _JSON)
def test_any_request_is_accepted_or_refused_with_a_rollout_error(document: Any) -> None:
    refused: list[str] = []
    try:
        parse_spec(document)
    except RolloutError as exc:
        refused.append(str(exc))
    assert all(message.startswith("bad rollout request: ") for message in refused)


def test_refusals_name_the_field() -> None:
    good: dict[str, Any] = {"target": {"packs": [PACK.model_dump(mode="json")]}}
    assert parse_spec(good).kind is RolloutKind.ROLLOUT
    with pytest.raises(RolloutError, match=r"options\.rate_per_minute"):
        parse_spec({**good, "options": {"rate_per_minute": 0}})
    with pytest.raises(RolloutError, match=r"target\.packs\.0\.sha256"):
        parse_spec({"target": {"packs": [{**PACK.model_dump(mode="json"), "sha256": "x"}]}})
    with pytest.raises(RolloutError, match="at_most is below at_least"):
        parse_spec({**good, "options": {"groups": [{"percent": 10, "at_least": 5, "at_most": 2}]}})
    with pytest.raises(RolloutError, match="packs or software"):
        parse_spec({"target": {}})
    with pytest.raises(RolloutError, match=r"json_invalid|Input should be"):
        parse_spec(json.dumps(good))


async def test_the_desired_generation_is_monotonic_and_survives_a_restart(store: Repository, tmp_path: Path) -> None:
    rollouts = RolloutStore(store)
    assert [await rollouts.next_generation("gw-1") for _ in range(3)] == [1, 2, 3]
    assert await rollouts.next_generation("gw-2") == 1
    current = await rollouts.current_desired("gw-1")
    assert current is not None and (current.generation, current.envelope) == (3, None)
    if store.backend == "sqlite":
        await store.close()
        reopened = await open_store(StoreSettings(data_dir=tmp_path / "data"))
        try:
            assert await RolloutStore(reopened).next_generation("gw-1") == 4
        finally:
            await reopened.close()
