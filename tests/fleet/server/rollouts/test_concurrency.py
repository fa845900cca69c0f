"""Two rollout services on one store (as two server processes are): the store decides who wins.

Each service has its own store connection(s), as a process of ``fleet serve --processes N`` has; their
in-process locks are separate, so only the store's revision check keeps them apart. The races run on
SQLite (one file, two repositories) and on a real PostgreSQL (one database, two repositories).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import ClassVar

import pytest

from bmsgate.fleet.protocol import parse_topic
from bmsgate.fleet.server.rollouts.model import (
    Actor,
    Member,
    MemberPhase,
    Rollout,
    RolloutError,
    RolloutSpec,
    RolloutState,
    Selection,
)
from bmsgate.fleet.server.rollouts.service import RolloutService
from bmsgate.fleet.server.rollouts.store import RolloutStore
from bmsgate.fleet.server.store import Repository, StoreSettings, open_store
from bmsgate.fleet.server.store.repository import IngestBatch
from tests.fleet.server.rollouts.helpers import spec, unsigned_envelope
from tests.fleet.server.store.messages import T0, state

TECHNICIAN = Actor(name="alice", role="technician")


@pytest.fixture(params=["sqlite", "postgresql"])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Repository, Repository]]:
    """Two repositories on one database (each as one server process would open it)."""
    if request.param == "sqlite":
        settings = StoreSettings(data_dir=tmp_path / "data")
    else:
        settings = StoreSettings(postgres_url=request.getfixturevalue("postgres_url"))
    first = await open_store(settings)
    second = await open_store(settings)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


class Published:
    """What the publishers of every service sent, per gateway."""

    def __init__(self) -> None:
        self.by_gateway: dict[str, int] = {}

    def publisher(self, before: Callable[[], Awaitable[None]] | None = None) -> Callable[[str, bytes], Awaitable[None]]:
        """A publisher recording each desired state (running `before` first, once)."""
        pending = [before] if before is not None else []

        async def publish(topic_name: str, _payload: bytes) -> None:
            if pending:
                await pending.pop()()
            gateway, _ = parse_topic(topic_name)
            self.by_gateway[gateway] = self.by_gateway.get(gateway, 0) + 1

        return publish


class MembersReadHook(RolloutStore):
    """A rollout store that runs `hook` once, right after a planning step read the members (the race window)."""

    def __init__(self, store: Repository, hook: Callable[[], Awaitable[None]]) -> None:
        super().__init__(store)
        self._hooks = [hook]

    async def members(self, rollout_id: str) -> list[Member]:
        """The members, then the hook (once)."""
        members = await super().members(rollout_id)
        if self._hooks:
            await self._hooks.pop()()
        return members


async def _register(store: Repository, gateways: Iterable[str]) -> None:
    await store.write_batch(IngestBatch(states=[(state(gateway), T0) for gateway in gateways]))


def _selecting(gateways: list[str]) -> RolloutSpec:
    return spec(jitter_s=0, groups=()).model_copy(update={"selection": Selection(gateways=tuple(gateways))})


def _services(stores: tuple[Repository, Repository]) -> tuple[RolloutService, RolloutService]:
    return (
        RolloutService(stores[0], unsigned_envelope, clock=lambda: T0),
        RolloutService(stores[1], unsigned_envelope, clock=lambda: T0),
    )


async def _create(service: RolloutService, store: Repository, gateways: list[str]) -> Rollout:
    await _register(store, gateways)
    return await service.create(spec(jitter_s=0, groups=(), rate_per_minute=10_000), TECHNICIAN)


async def test_a_pause_committed_while_a_step_decides_is_kept_and_nothing_is_published(
    two_stores: tuple[Repository, Repository],
) -> None:
    planning, operator = _services(two_stores)
    rollout = await _create(operator, two_stores[1], [f"gw-{index}" for index in range(6)])

    async def pause_meanwhile() -> None:
        await operator.pause(rollout.id, TECHNICIAN)

    planning.rollouts = MembersReadHook(two_stores[0], pause_meanwhile)
    published = Published()
    assert await planning.step(published.publisher()) == 0
    assert published.by_gateway == {}
    stored = await operator.rollouts.get(rollout.id)
    assert stored.state is RolloutState.PAUSED
    assert stored.group_started_at == ()  # the step's "group 1 started" was refused with the rest
    members = await operator.rollouts.members(rollout.id)
    assert {member.phase for member in members} == {MemberPhase.PENDING.value}
    # The next steps (of either service) read the pause and keep it.
    assert await planning.step(published.publisher()) == 0
    assert await operator.step(published.publisher()) == 0
    assert (await operator.rollouts.get(rollout.id)).state is RolloutState.PAUSED
    actions = [entry.action for entry in await operator.audit(rollout.id)]
    assert actions == ["create", "pause"]


async def test_a_pause_while_a_batch_is_published_stops_the_rest_and_each_member_is_published_once(
    two_stores: tuple[Repository, Repository],
) -> None:
    planning, operator = _services(two_stores)
    gateways = [f"gw-{index}" for index in range(8)]
    rollout = await _create(operator, two_stores[1], gateways)

    async def pause() -> None:
        await operator.pause(rollout.id, TECHNICIAN)

    published = Published()
    # The pause commits while the first desired state is on its way: that one goes out, the rest do not.
    assert await planning.step(published.publisher(before=pause)) == 1
    assert list(published.by_gateway.values()) == [1]
    members = await operator.rollouts.members(rollout.id)
    started = [member for member in members if member.generation is not None]
    assert [member.gateway for member in started] == list(published.by_gateway)
    others = {member.phase for member in members if member.generation is None}
    assert others == {MemberPhase.PENDING.value}  # their claims were given back
    assert (await operator.rollouts.get(rollout.id)).state is RolloutState.PAUSED

    await operator.resume(rollout.id, TECHNICIAN)
    counts = await asyncio.gather(planning.step(published.publisher()), operator.step(published.publisher()))
    assert sum(counts) == len(gateways) - 1
    assert published.by_gateway == dict.fromkeys(gateways, 1)
    members = await operator.rollouts.members(rollout.id)
    assert [member.generation for member in members] == [1] * len(gateways)


async def test_racing_steps_of_two_services_and_a_pause_publish_each_member_at_most_once_and_keep_the_pause(
    two_stores: tuple[Repository, Repository],
) -> None:
    first, second = _services(two_stores)
    for round_index in range(4):
        gateways = [f"gw-{round_index}-{index}" for index in range(12)]
        rollout = await _create(second, two_stores[1], gateways)
        published = Published()
        shuffle = random.Random(round_index)

        async def steps(service: RolloutService, seed: int, published: Published = published) -> None:
            delays = random.Random(seed)
            for _ in range(6):
                await service.step(published.publisher())
                await asyncio.sleep(delays.uniform(0, 0.004))

        pauser = shuffle.choice((first, second))
        delay = shuffle.uniform(0, 0.02)

        async def pause_later(
            rollout_id: str = rollout.id, pauser: RolloutService = pauser, delay: float = delay
        ) -> None:
            await asyncio.sleep(delay)
            await pauser.pause(rollout_id, TECHNICIAN)

        await asyncio.gather(steps(first, round_index), steps(second, round_index + 100), pause_later())
        assert set(published.by_gateway.values()) <= {1}, published.by_gateway
        stored = await first.rollouts.get(rollout.id)
        assert stored.state is RolloutState.PAUSED
        members = await first.rollouts.members(rollout.id)
        recorded = {member.gateway for member in members if member.generation is not None}
        assert recorded == set(published.by_gateway)
        assert {member.phase for member in members if member.generation is None} <= {MemberPhase.PENDING.value}
        # After the pause nothing is published, by either service.
        before = dict(published.by_gateway)
        await asyncio.gather(first.step(published.publisher()), second.step(published.publisher()))
        assert published.by_gateway == before
        await first.cancel(rollout.id, TECHNICIAN)


async def test_an_action_that_keeps_losing_to_other_writers_is_refused_with_a_clear_error(
    two_stores: tuple[Repository, Repository],
) -> None:
    operator, other = _services(two_stores)
    rollout = await _create(operator, two_stores[1], ["gw-1"])

    class AlwaysOvertaken(RolloutStore):
        async def get(self, rollout_id: str) -> Rollout:
            read = await super().get(rollout_id)
            await other.rollouts.save(read, header=False)  # another writer moves it on after every read
            return read

    operator.rollouts = AlwaysOvertaken(two_stores[0])
    with pytest.raises(RolloutError, match="keeps changing under this pause: try again"):
        await operator.pause(rollout.id, TECHNICIAN)
    assert (await other.rollouts.get(rollout.id)).state is RolloutState.RUNNING


async def test_two_creations_over_one_gateway_racing_in_two_services_let_only_one_through(
    two_stores: tuple[Repository, Repository],
) -> None:
    first, second = _services(two_stores)
    await _register(two_stores[0], ["gw-1", "gw-2", "gw-3"])
    created: list[Rollout] = []

    async def create_in_the_other() -> None:
        created.append(await second.create(_selecting(["gw-2", "gw-3"]), TECHNICIAN))

    class BusyReadHook(RolloutStore):
        """Runs the other service's creation right after this one's overlap check read the busy gateways."""

        hooks: ClassVar[list[Callable[[], Awaitable[None]]]] = [create_in_the_other]

        async def busy_gateways(self) -> dict[str, str]:
            busy = await super().busy_gateways()
            if self.hooks:
                await self.hooks.pop()()
            return busy

    first.rollouts = BusyReadHook(two_stores[0])
    with pytest.raises(RolloutError, match="1 of the selected gateways are still in an active rollout: gw-2"):
        await first.create(_selecting(["gw-1", "gw-2"]), TECHNICIAN)
    assert [rollout.id for rollout in await second.rollouts.list_rollouts()] == [created[0].id]
    assert {member.gateway for member in await second.rollouts.members(created[0].id)} == {"gw-2", "gw-3"}
    # Without an overlap both go through, from either service.
    await first.create(_selecting(["gw-1"]), TECHNICIAN)
    assert len(await second.rollouts.list_rollouts()) == 2
