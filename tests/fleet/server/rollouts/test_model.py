"""Rollout requests refused with our own error naming the field; rollout rows and generations in the store."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.fleet.server.rollouts import planner
from bmsgate.fleet.server.rollouts.model import Actor, Outcome, RolloutError, RolloutKind, parse_spec
from bmsgate.fleet.server.rollouts.service import RolloutService
from bmsgate.fleet.server.rollouts.store import RolloutStore
from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.repository import IngestBatch, Repository
from bmsgate.fleet.server.store.transfer import copy_store
from tests.fleet.server.rollouts.helpers import PACK, spec, unsigned_envelope
from tests.fleet.server.store.messages import T0, state

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


async def test_a_store_copied_to_postgresql_keeps_rollouts_and_generations(tmp_path: Path, postgres_url: str) -> None:
    source = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    target = await open_store(StoreSettings(postgres_url=postgres_url))
    try:
        batch = IngestBatch(states=[(state("gw-1"), T0)])
        await source.write_batch(batch)
        service = RolloutService(source, unsigned_envelope, clock=lambda: T0)
        rollout = await service.create(spec(jitter_s=0), Actor(name="alice", role="technician"))

        async def publish(_topic: str, _payload: bytes) -> None:
            return None

        assert await service.step(publish) == 1
        await copy_store(source, target)
        await copy_store(source, target)  # again: keys kept, nothing doubled
        copied = RolloutService(target, unsigned_envelope)
        assert await copied.view(rollout.id) == await service.view(rollout.id)
        assert await copied.audit(rollout.id) == await service.audit(rollout.id)
        assert await copied.rollouts.current_desired("gw-1") == await service.rollouts.current_desired("gw-1")
        assert await copied.rollouts.next_generation("gw-1") == 2
        await copied.rollouts.add_audit(rollout.id, T0 + 1, Actor(name="bob", role="admin"), "note")
        assert len(await copied.audit(rollout.id)) == len(await service.audit(rollout.id)) + 1
    finally:
        await source.close()
        await target.close()


async def test_the_stores_counts_match_the_members_and_failures_are_shown_first(store: Repository) -> None:
    batch = IngestBatch(states=[(state(f"gw-{index}"), T0) for index in range(8)])
    await store.write_batch(batch)
    service = RolloutService(store, unsigned_envelope, clock=lambda: T0)
    rollout = await service.create(spec(jitter_s=0, error_ratio=None), Actor(name="alice", role="technician"))
    members = await service.rollouts.members(rollout.id)
    changed = [
        dataclasses.replace(members[1], phase="failed", outcome=Outcome.FAILURE, reason="hardware"),
        dataclasses.replace(members[2], phase="committed", outcome=Outcome.SUCCESS),
        dataclasses.replace(members[3], phase="timeout", outcome=Outcome.FAILURE, reason="timeout"),
    ]
    assert await service.rollouts.save(rollout, changed, header=False) == rollout.revision + 1
    members = await service.rollouts.members(rollout.id)
    view = await service.view(rollout.id, members=3)
    assert view.groups == planner.group_progress(rollout, members)
    assert sum(group.failed for group in view.groups) == 2
    assert [member.outcome for member in view.members] == [Outcome.FAILURE, Outcome.FAILURE, None]
