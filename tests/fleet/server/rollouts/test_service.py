"""The rollout service with a real Mosquitto and both stores; simulated gateways are plain MQTT clients.

The simulated gateways stand for the fleet agent's update side (another engineer's): they take each desired
state and answer with ``ReportedState`` payloads, as the contract in :mod:`bmsgate.fleet.updates` says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.fleet.protocol import Channel, gateway_filter, parse_topic, topic
from bmsgate.fleet.server.rollouts.model import Actor, RolloutError, RolloutKind, RolloutState, Selection
from bmsgate.fleet.server.rollouts.service import RolloutService
from bmsgate.fleet.server.store.repository import Availability, IngestBatch, Repository
from bmsgate.fleet.updates import DesiredEnvelope, FailureReason, UpdatePhase, decode_desired
from bmsgate.mqtt.client import connect
from bmsgate.mqtt.settings import BrokerSettings
from tests.fleet.server.rollouts.helpers import OLD_PACK, report, spec, unsigned_envelope
from tests.fleet.server.store.messages import T0, state
from tests.mosquitto import Mosquitto

TECHNICIAN = Actor(name="alice", role="technician")


async def _register(store: Repository, gateways: Iterable[str], *, online: bool = True) -> None:
    batch = IngestBatch()
    for gateway in gateways:
        batch.states.append((state(gateway), T0))
        batch.availability.append((gateway, Availability.ONLINE if online else Availability.OFFLINE, T0))
    await store.write_batch(batch)


Answer = Callable[[DesiredEnvelope], tuple[UpdatePhase, FailureReason | None] | None]


class Gateways:
    """Simulated gateways on one MQTT connection: record each desired state, answer as `answer` says."""

    def __init__(self, url: str, answer: Answer) -> None:
        self.settings = BrokerSettings(url=url, client_id="simulated-gateways")
        self.answer = answer
        self.received: dict[str, list[DesiredEnvelope]] = {}

    async def run(self, ready: asyncio.Event) -> None:
        async with connect(self.settings, will_topic="sim/availability", will_payload="offline") as session:
            await session.subscribe(gateway_filter(Channel.DESIRED))
            ready.set()
            async for message in session.messages():
                gateway, _ = parse_topic(message.topic)
                envelope = decode_desired(message.payload, topic=message.topic, gateway=gateway)
                self.received.setdefault(gateway, []).append(envelope)
                answer = self.answer(envelope)
                if answer is None:
                    continue
                phase, reason = answer
                reported = report(
                    gateway,
                    phase,
                    generation=envelope.signed.generation,
                    rollout=envelope.signed.rollout,
                    at=T0 + 10,
                    reason=reason,
                )
                await session.publish(
                    topic(gateway, Channel.REPORTED), reported.model_dump_json().encode(), retain=True
                )


@contextlib.asynccontextmanager
async def _running(service: RolloutService, gateways: Gateways, url: str) -> AsyncIterator[None]:
    ready = asyncio.Event()
    tasks = [asyncio.create_task(gateways.run(ready))]
    await asyncio.wait_for(ready.wait(), 10)
    tasks.append(asyncio.create_task(service.run(BrokerSettings(url=url), client_id="rollouts-under-test")))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _until(check: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def _ids(count: int) -> list[str]:
    return [f"gw-{index:02d}" for index in range(count)]


@pytest.mark.slow
async def test_a_rollout_reaches_every_group_and_completes(store: Repository, mosquitto: Mosquitto) -> None:
    await _register(store, _ids(12))
    service = RolloutService(store, unsigned_envelope, tick_s=0.05)
    gateways = Gateways(mosquitto.url, lambda _envelope: (UpdatePhase.COMMITTED, None))
    async with _running(service, gateways, mosquitto.url):
        rollout = await service.create(spec(jitter_s=0.2), TECHNICIAN)

        async def completed() -> bool:
            return (await service.rollouts.get(rollout.id)).state is RolloutState.COMPLETED

        await _until(completed)
    view = await service.view(rollout.id)
    assert [group.size for group in view.groups] == [1, 10, 1]
    assert all(group.succeeded == group.size and group.phases == {"committed": group.size} for group in view.groups)
    assert sorted(gateways.received) == _ids(12)
    for gateway, envelopes in gateways.received.items():
        assert [(e.signed.generation, e.signed.rollout, e.signed.gateway) for e in envelopes] == [
            (1, rollout.id, gateway)
        ]
        assert envelopes[0].signed.expires_at == pytest.approx(envelopes[0].signed.issued_at + 30 * 86400)
    actions = [(entry.actor, entry.action) for entry in await service.audit(rollout.id)]
    assert actions[0] == ("alice", "create")
    assert ("server", "progress") in actions

    # A second rollout raises every generation by one; the first one's previous set is kept per member.
    again = await service.create(spec(jitter_s=0), TECHNICIAN)
    gateways2 = Gateways(mosquitto.url, lambda _envelope: (UpdatePhase.COMMITTED, None))
    async with _running(service, gateways2, mosquitto.url):

        async def second_done() -> bool:
            return (await service.rollouts.get(again.id)).state is RolloutState.COMPLETED

        await _until(second_done)
    assert {
        gateway: [e.signed.generation for e in got][-1] for gateway, got in gateways2.received.items()
    } == dict.fromkeys(_ids(12), 2)
    members = await service.rollouts.members(again.id)
    assert all(member.previous is not None and member.previous.packs == spec().target.packs for member in members)


@pytest.mark.slow
async def test_a_reverted_canary_stops_the_rollout_and_the_rest_never_see_it(
    store: Repository, mosquitto: Mosquitto
) -> None:
    await _register(store, _ids(30))
    service = RolloutService(store, unsigned_envelope, tick_s=0.05)
    gateways = Gateways(mosquitto.url, lambda _envelope: (UpdatePhase.REVERTED, FailureReason.HEALTH))
    async with _running(service, gateways, mosquitto.url):
        rollout = await service.create(spec(jitter_s=0), TECHNICIAN)

        async def stopped() -> bool:
            return (await service.rollouts.get(rollout.id)).state is RolloutState.STOPPED

        await _until(stopped)
        await asyncio.sleep(0.3)
    view = await service.view(rollout.id)
    assert "error threshold: group 1" in view.rollout.reason
    canary = {member.gateway for member in view.members if member.group == 0}
    assert set(gateways.received) == canary
    assert view.groups[0].reasons == {"health": len(canary)}
    assert all(group.phases == {"pending": group.size} for group in view.groups[1:])

    with pytest.raises(RolloutError, match="stopped"):
        await service.resume(rollout.id, TECHNICIAN)
    retry = await service.retry_failed(rollout.id, TECHNICIAN)
    assert retry.spec.kind is RolloutKind.RETRY and retry.spec.selection == Selection(gateways=tuple(sorted(canary)))
    with pytest.raises(RolloutError, match="still in an active rollout"):
        await service.rollback(rollout.id, Actor(name="root", role="admin"))
    await service.cancel(retry.id, TECHNICIAN)
    rollback = await service.rollback(rollout.id, Actor(name="root", role="admin"))
    rollback_members = await service.rollouts.members(rollback.id)
    assert {member.gateway for member in rollback_members} == canary
    assert all(member.target is not None and member.target.packs == () for member in rollback_members)
    audit = [(entry.actor, entry.action) for entry in await service.audit(rollout.id)]
    assert ("alice", "retry-failed") in audit and ("root", "rollback") in audit


@pytest.mark.slow
async def test_an_offline_gateway_gets_the_retained_desired_state_when_it_comes_back(
    store: Repository, mosquitto: Mosquitto
) -> None:
    await _register(store, ["gw-away"], online=False)
    service = RolloutService(store, unsigned_envelope, tick_s=0.05)
    silent = Gateways(mosquitto.url, lambda _envelope: None)
    async with _running(service, silent, mosquitto.url):
        rollout = await service.create(spec(jitter_s=0, timeout_s=0.5), TECHNICIAN)

        async def published() -> bool:
            return (await service.rollouts.members(rollout.id))[0].generation is not None

        await _until(published)
        await asyncio.sleep(1.0)
        member = (await service.rollouts.members(rollout.id))[0]
        assert (member.phase, member.outcome) == ("published", None)  # offline: its clock has not started

    # It comes back: a new connection finds the retained desired state and answers; the rollout completes.
    late = Gateways(mosquitto.url, lambda _envelope: (UpdatePhase.COMMITTED, None))
    async with _running(service, late, mosquitto.url):

        async def completed() -> bool:
            return (await service.rollouts.get(rollout.id)).state is RolloutState.COMPLETED

        await _until(completed)
    assert [envelope.signed.generation for envelope in late.received["gw-away"]] == [1]


async def test_a_malformed_report_is_counted_and_changes_nothing(store: Repository) -> None:
    service = RolloutService(store, unsigned_envelope)
    assert not await service.handle_report("fleet/v1/gw-1/reported", b"{not json")
    assert not await service.handle_report(
        "fleet/v1/gw-1/reported",
        report("gw-2", UpdatePhase.FAILED, generation=1, rollout="x").model_dump_json().encode(),
    )
    assert service.reports_refused == 2
    unknown = report("gw-1", UpdatePhase.COMMITTED, generation=1, rollout="no-such").model_dump_json().encode()
    assert not await service.handle_report("fleet/v1/gw-1/reported", unknown)


async def test_a_software_only_rollout_keeps_the_packs_of_the_current_desired_state(store: Repository) -> None:
    await _register(store, ["gw-1"])
    service = RolloutService(store, unsigned_envelope, clock=lambda: T0)
    published: list[tuple[str, bytes]] = []

    async def publish(topic_name: str, payload: bytes) -> None:
        published.append((topic_name, payload))

    first = await service.create(
        spec(jitter_s=0).model_copy(update={"target": spec().target.model_copy(update={"packs": (OLD_PACK,)})}),
        TECHNICIAN,
    )
    assert await service.step(publish) == 1
    software = spec().target.model_validate(
        {"software": {"version": "2.0.0", "target": "software/bmsgate-2.0.0.whl", "length": 10, "sha256": "e" * 64}}
    )
    await service.cancel(first.id, TECHNICIAN)
    await service.create(spec(jitter_s=0).model_copy(update={"target": software}), TECHNICIAN)
    assert await service.step(publish) == 1
    last = decode_desired(published[-1][1], topic=published[-1][0], gateway="gw-1").signed
    assert (last.generation, last.packs, last.software) == (2, (OLD_PACK,), software.software)
    assert published[-1][0] == "fleet/v1/gw-1/desired"


async def test_an_expired_desired_state_is_issued_again_with_a_new_generation(store: Repository) -> None:
    await _register(store, ["gw-1"], online=False)
    now = [T0]
    service = RolloutService(store, unsigned_envelope, clock=lambda: now[0])
    published: list[bytes] = []

    async def publish(_topic: str, payload: bytes) -> None:
        published.append(payload)

    rollout = await service.create(spec(jitter_s=0, expires_s=100), TECHNICIAN)
    assert await service.step(publish) == 1
    now[0] += 100
    assert await service.step(publish) == 1
    states = [decode_desired(payload, topic="fleet/v1/gw-1/desired", gateway="gw-1").signed for payload in published]
    assert [(state.generation, state.expires_at) for state in states] == [(1, T0 + 100), (2, T0 + 200)]
    (member,) = await service.rollouts.members(rollout.id)
    assert member.generation == 2
    assert member.previous is not None and member.previous.packs == ()  # what it had before the rollout


_TOPICS = st.sampled_from(["fleet/v1/gw-1/reported", "fleet/v1/gw-1/state", "fleet/v1/GW/reported", "x/y", ""])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic_name=_TOPICS, payload=st.binary(max_size=300) | st.builds(lambda text: text.encode(), st.text()))
async def test_any_reported_payload_is_taken_or_refused_quietly(
    store: Repository, topic_name: str, payload: bytes
) -> None:
    # The same (empty) store for every example: a payload that is not a report of a known rollout writes nothing.
    service = RolloutService(store, unsigned_envelope)
    assert await service.handle_report(topic_name, payload) is False


async def test_a_gateway_still_in_an_active_rollout_is_not_taken_by_another(store: Repository) -> None:
    await _register(store, ["gw-1", "gw-2"])
    service = RolloutService(store, unsigned_envelope, clock=lambda: T0)
    first = await service.create(spec().model_copy(update={"selection": Selection(gateways=("gw-1",))}), TECHNICIAN)
    with pytest.raises(
        RolloutError, match=rf"1 of the selected gateways are still in an active rollout: gw-1 \({first.id}\)"
    ):
        await service.create(spec(), TECHNICIAN)
    await service.create(spec().model_copy(update={"selection": Selection(gateways=("gw-2",))}), TECHNICIAN)
    await service.cancel(first.id, TECHNICIAN)
    await service.create(spec().model_copy(update={"selection": Selection(gateways=("gw-1",))}), TECHNICIAN)


async def test_a_rollback_publishes_each_gateways_previous_set(store: Repository) -> None:
    await _register(store, ["gw-1"])
    service = RolloutService(store, unsigned_envelope, clock=lambda: T0)
    published: list[bytes] = []

    async def publish(_topic: str, payload: bytes) -> None:
        published.append(payload)

    async def commit(rollout_id: str, generation: int) -> None:
        answer = report("gw-1", UpdatePhase.COMMITTED, generation=generation, rollout=rollout_id)
        assert await service.handle_report("fleet/v1/gw-1/reported", answer.model_dump_json().encode())

    old_target = spec().target.model_copy(update={"packs": (OLD_PACK,)})
    first = await service.create(spec(jitter_s=0).model_copy(update={"target": old_target}), TECHNICIAN)
    await service.step(publish)
    await commit(first.id, 1)
    second = await service.create(spec(jitter_s=0), TECHNICIAN)
    await service.step(publish)
    await commit(second.id, 2)
    await service.step(publish)
    assert (await service.rollouts.get(second.id)).state is RolloutState.COMPLETED
    back = await service.rollback(second.id, Actor(name="root", role="admin"))
    await service.step(publish)
    last = decode_desired(published[-1], topic="fleet/v1/gw-1/desired", gateway="gw-1").signed
    assert (last.generation, last.rollout, last.packs) == (3, back.id, (OLD_PACK,))
