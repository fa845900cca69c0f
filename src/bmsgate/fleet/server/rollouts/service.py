"""The rollout service: drives the planner, stores its decisions, publishes desired states, reads reports.

One MQTT session (through :mod:`bmsgate.mqtt.client`) subscribes to ``fleet/v1/+/reported`` and publishes
each gateway's signed desired state retained, QoS 1, on ``fleet/v1/<gw>/desired`` (the broker's ACL lets
only the server write there). A planning step runs every ``tick_s`` and at once after a change (a new
rollout, a report, a user action).

The store is the arbiter between writers, also across server processes (an API action answered by one
process, planning in the leader): every change is decided on the rollout as read and stored only if its
revision is still the one read (:meth:`.store.RolloutStore.save`); otherwise it is read and decided
again (a user action, up to :data:`_ACTION_ATTEMPTS` times; a planning step drops that rollout's
decision and plans again at once). So a user's pause is never overwritten by a planning step decided
before it. The in-process lock only spares one process conflicts with itself.

Publishing: the step's decision claims the members to publish (phase ``published``, no generation yet)
in the same checked write, so two planners can never both publish to one member. Then, per member: check
the claim still stands and the rollout still runs (a pause committed meanwhile stops the rest of the
batch, whose claims are given back), raise its generation in the store (atomically, so it is monotonic
across restarts), build the :class:`~bmsgate.fleet.updates.DesiredState` (the rollout's or the member's
own target, with what the target leaves open taken from the gateway's current desired state), have it
signed by the injected ``sign`` callable, publish it, then record the envelope and the member. A publish
that fails gives the claims back (retried at the next step); its generation number is simply skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

from bmsgate.errors import BmsgateError
from bmsgate.fleet.protocol import Channel, FleetMessageError, gateway_filter, parse_topic, topic
from bmsgate.fleet.server.live import LiveFeed, LiveKind, LiveUpdate
from bmsgate.fleet.server.rollouts import planner
from bmsgate.fleet.server.rollouts.model import (
    ACTIVE_STATES,
    SERVER_ACTOR,
    Actor,
    Member,
    Rollout,
    RolloutError,
    RolloutKind,
    RolloutSpec,
    RolloutTarget,
    Selection,
    UnknownRollout,
    select_gateways,
)
from bmsgate.fleet.server.rollouts.store import AuditEntry, RolloutStore
from bmsgate.fleet.server.store.repository import Repository
from bmsgate.fleet.updates import DesiredEnvelope, DesiredState, decode_reported
from bmsgate.mqtt.client import MqttSession, connect
from bmsgate.mqtt.settings import BrokerSettings

__all__ = ["Publisher", "RolloutService", "RolloutView", "SignDesired"]

_log = logging.getLogger(__name__)

SignDesired = Callable[[DesiredState], DesiredEnvelope]
"""Signs a desired state (``bmsgate.packs.trust.sign_desired`` with the server's online key, bound)."""
Publisher = Callable[[str, bytes], Awaitable[None]]
"""Publishes one payload retained with QoS 1 (``(topic, payload)``); raises a ``BmsgateError`` when it cannot."""

ROLLOUT_CLIENT_ID: Final = "bmsgate-fleet-rollouts"
_RECONNECT_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
_ACTION_ATTEMPTS: Final = 20
"""A user action read and decided again this often when planning steps keep moving the rollout on."""
_MAX_PLANNING_SHARE_INVERSE: Final = 5.0
"""A planning step starts at the earliest this many times its last cost after the last one started."""


MEMBERS_SHOWN: Final = 1000
"""Members a rollout's view lists (failures first); its counts always cover every member."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RolloutView:
    """A rollout with its counts per group (what the API and the dashboard show)."""

    rollout: Rollout
    groups: list[planner.GroupProgress]
    members: list[Member]
    """At most :data:`MEMBERS_SHOWN` (none in a list of rollouts): failures first, then those in progress."""


class RolloutService:
    """Rollouts of one fleet server.

    Args:
        store: the fleet store (registry, rollout tables).
        sign: signs each desired state before it is published.
        clock: the time (Unix seconds).
        tick_s: the longest pause between planning steps.
        feed: told of every rollout change (the dashboard's live updates).
        signing_ready: why `sign` cannot work yet, or None when it can (checked when a rollout is created).
    """

    def __init__(
        self,
        store: Repository,
        sign: SignDesired,
        *,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
        feed: LiveFeed | None = None,
        signing_ready: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.rollouts = RolloutStore(store)
        self._feed = feed
        self._signing_ready = signing_ready
        self._registry = store
        self._sign = sign
        self._clock = clock
        self._tick_s = tick_s
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.reports_refused = 0
        """Reported payloads that did not parse (logged, counted, otherwise ignored)."""

    # -- user actions ----------------------------------------------------------------------------------

    async def create(
        self, spec: RolloutSpec, actor: Actor, *, targets: dict[str, RolloutTarget] | None = None
    ) -> Rollout:
        """Create a rollout: evaluate the selection against the registry now and freeze its gateways.

        Raises:
            RolloutError: desired states cannot be signed yet (``signing_ready`` says why), the selection
                picks nothing (or unknown or too many gateways), or a gateway that is still without a final
                answer in another active rollout.
            StoreError: the store failed.
        """
        unready = self._signing_ready()
        if unready is not None:
            raise RolloutError(f"desired states cannot be signed: {unready}")
        registry = await self._registry.list_gateways()
        gateways = select_gateways(registry, spec.selection)
        rollout_id = f"ro-{secrets.token_hex(6)}"
        groups = planner.split_groups(gateways, spec.options.groups, rollout_id)
        members = planner.new_members(rollout_id, groups, spec.options.jitter_s, targets=targets)
        now = self._clock()
        rollout = Rollout(
            id=rollout_id,
            created_at=now,
            created_by=actor.name,
            spec=spec,
            group_count=len(groups),
            updated_at=now,
        )
        sizes = "+".join(str(len(group)) for group in groups)
        detail = f"{spec.kind.value} {spec.name!r}: {len(gateways)} gateways in groups {sizes}"
        async with self._lock:
            for _ in range(_ACTION_ATTEMPTS):
                # Read before the check: a rollout created meanwhile (by any process) makes the store refuse
                # this one, and the check runs again.
                creations = await self.rollouts.creations_revision()
                # Two rollouts publishing to one gateway would each wait for an answer to its own generation.
                busy = await self.rollouts.busy_gateways()
                clashing = sorted(gateway for gateway in gateways if gateway in busy)
                if clashing:
                    examples = ", ".join(f"{gateway} ({busy[gateway]})" for gateway in clashing[:5])
                    raise RolloutError(
                        f"{len(clashing)} of the selected gateways are still in an active rollout: {examples}; "
                        "wait, cancel that rollout, or select without them"
                    )
                if await self.rollouts.create(rollout, members, actor, detail, creations_revision=creations):
                    break
            else:
                raise RolloutError("other rollouts keep being created meanwhile: try again")
        self._changed(rollout)
        self._wake.set()
        return rollout

    def _changed(self, rollout: Rollout) -> None:
        """Tell the live feed (the dashboard reloads the rollout it shows)."""
        if self._feed is not None:
            self._feed.publish(
                LiveUpdate(
                    kind=LiveKind.ROLLOUT,
                    gateway="",
                    at=self._clock(),
                    data={"id": rollout.id, "state": rollout.state.value},
                )
            )

    async def _act(
        self, rollout_id: str, actor: Actor, action: str, change: Callable[[Rollout, float], Rollout]
    ) -> Rollout:
        async with self._lock:
            for _ in range(_ACTION_ATTEMPTS):
                rollout = await self.rollouts.get(rollout_id)
                now = self._clock()
                changed = change(rollout, now)
                revision = await self.rollouts.save(changed, (), [(now, actor, action, changed.reason)])
                if revision is not None:
                    break
            else:
                raise RolloutError(f"rollout {rollout_id} keeps changing under this {action}: try again")
        changed = dataclasses.replace(changed, revision=revision)
        self._changed(changed)
        self._wake.set()
        return changed

    async def pause(self, rollout_id: str, actor: Actor) -> Rollout:
        """Pause: nothing more is published until resumed (reports are still recorded)."""
        return await self._act(rollout_id, actor, "pause", planner.pause)

    async def resume(self, rollout_id: str, actor: Actor) -> Rollout:
        """Resume a paused rollout, or approve the next group of one waiting for approval."""
        return await self._act(rollout_id, actor, "resume", planner.resume)

    async def cancel(self, rollout_id: str, actor: Actor) -> Rollout:
        """Cancel: gateways not yet started keep what they run; started ones keep their new target."""
        return await self._act(rollout_id, actor, "cancel", planner.cancel)

    async def retry_failed(self, rollout_id: str, actor: Actor) -> Rollout:
        """A new rollout of only the failed gateways of `rollout_id` (same target and options).

        Raises:
            RolloutError: the rollout is still active, or none of its gateways failed.
        """
        original = await self.rollouts.get(rollout_id)
        if original.state in ACTIVE_STATES:
            raise RolloutError(f"rollout {rollout_id} is {original.state.value}: cancel it first, or wait")
        failed = planner.failed_members(await self.rollouts.members(rollout_id))
        if not failed:
            raise RolloutError(f"rollout {rollout_id} has no failed gateway")
        spec = original.spec.model_copy(
            update={
                "kind": RolloutKind.RETRY,
                "parent": rollout_id,
                "name": f"retry of {original.spec.name or rollout_id}"[:128],
                "selection": Selection(gateways=tuple(member.gateway for member in failed)),
            }
        )
        targets = {member.gateway: member.target for member in failed if member.target is not None}
        created = await self.create(spec, actor, targets=targets)
        await self.rollouts.add_audit(rollout_id, self._clock(), actor, "retry-failed", f"as {created.id}")
        return created

    async def rollback(self, rollout_id: str, actor: Actor) -> Rollout:
        """A new rollout giving each gateway `rollout_id` published to the desired set it had before.

        The original is cancelled first if still active. Gateways it never published to are left alone.

        Raises:
            RolloutError: it published to no gateway.
        """
        original = await self.rollouts.get(rollout_id)
        if original.state in ACTIVE_STATES:
            # Cancelled first, then read: a planning step between a read and the cancel could publish to
            # members the rollback would then leave on the new target.
            await self.cancel(rollout_id, actor)
        members = planner.published_members(await self.rollouts.members(rollout_id))
        if not members:
            raise RolloutError(f"rollout {rollout_id} published to no gateway: nothing to roll back")
        spec = RolloutSpec(
            name=f"rollback of {original.spec.name or rollout_id}"[:128],
            target=RolloutTarget(),
            selection=Selection(gateways=tuple(member.gateway for member in members)),
            options=original.spec.options,
            kind=RolloutKind.ROLLBACK,
            parent=rollout_id,
        )
        targets = {member.gateway: member.previous or RolloutTarget(packs=()) for member in members}
        created = await self.create(spec, actor, targets=targets)
        await self.rollouts.add_audit(rollout_id, self._clock(), actor, "rollback", f"as {created.id}")
        return created

    # -- reading ---------------------------------------------------------------------------------------

    async def view(self, rollout_id: str, *, members: int = MEMBERS_SHOWN) -> RolloutView:
        """One rollout with its counts per group (an aggregate query) and at most `members` of its members."""
        rollout = await self.rollouts.get(rollout_id)
        return await self._view(rollout, members)

    async def _view(self, rollout: Rollout, members: int) -> RolloutView:
        counts = await self.rollouts.phase_counts(rollout.id)
        shown = await self.rollouts.members_shown(rollout.id, members) if members > 0 else []
        return RolloutView(rollout=rollout, groups=planner.progress_from_counts(rollout, counts), members=shown)

    async def list_views(self) -> list[RolloutView]:
        """Every rollout, newest first, with its counts per group (no members)."""
        return [await self._view(rollout, 0) for rollout in await self.rollouts.list_rollouts()]

    async def audit(self, rollout_id: str) -> list[AuditEntry]:
        """A rollout's audit log, oldest first."""
        return await self.rollouts.audit(rollout_id)

    # -- planning and publishing -----------------------------------------------------------------------

    async def step(self, publish: Publisher) -> int:
        """One planning step over every active rollout; returns the desired states published."""
        published = 0
        async with self._lock:
            active = await self.rollouts.list_rollouts(states=sorted(ACTIVE_STATES))
            if not active:
                return 0
            online = await self.rollouts.online()
            for rollout in active:
                published += await self._step_one(rollout, online, publish)
        return published

    async def _step_one(self, rollout: Rollout, online: dict[str, bool], publish: Publisher) -> int:
        now = self._clock()
        members = await self.rollouts.members(rollout.id)
        decided = planner.plan(rollout, members, online, now)
        if not decided.rollout_changed and not decided.changed:
            return 0
        audit = [(now, SERVER_ACTOR, "progress", event) for event in decided.events]
        revision = await self.rollouts.save(decided.rollout, decided.changed, audit, header=decided.rollout_changed)
        if revision is None:
            # Another writer (a user's action, another process) moved the rollout on since it was read:
            # nothing of this decision was stored; plan again on what is stored now.
            self._wake.set()
            return 0
        self._changed(decided.rollout)
        by_gateway = {member.gateway: member for member in decided.members}
        claims = [by_gateway[gateway] for gateway in decided.publish]
        count = 0
        for index, member in enumerate(claims):
            try:
                if not await self.rollouts.claim_intact(member):
                    _log.info("rollout %s: stopped publishing (paused, cancelled or claim taken)", rollout.id)
                    await self.rollouts.release_claims(claims[index:])
                    break
                await self._publish_one(decided.rollout, member, now, publish)
            except BmsgateError as exc:
                _log.warning("rollout %s: desired state for %s not published: %s", rollout.id, member.gateway, exc)
                with contextlib.suppress(BmsgateError):
                    await self.rollouts.release_claims(claims[index:])
                break
            count += 1
        return count

    async def _publish_one(self, rollout: Rollout, member: Member, now: float, publish: Publisher) -> None:
        current = await self.rollouts.current_desired(member.gateway)
        before = current.envelope.signed if current is not None and current.envelope is not None else None
        target = member.target or rollout.spec.target
        generation = await self.rollouts.next_generation(member.gateway)
        state = DesiredState(
            v=1,
            gateway=member.gateway,
            generation=generation,
            issued_at=now,
            expires_at=now + rollout.spec.options.expires_s,
            rollout=rollout.id,
            packs=target.packs if target.packs is not None else (before.packs if before else ()),
            # Software the rollout does not name is left as it runs (None), never copied from the last
            # published state: that may be a version that failed and was reverted.
            software=target.software,
        )
        envelope = self._sign(state)
        await publish(topic(member.gateway, Channel.DESIRED), envelope.model_dump_json().encode())
        previous = member.previous or RolloutTarget(
            packs=before.packs if before else (), software=before.software if before else None
        )
        recorded = await self.rollouts.record_published(
            envelope, dataclasses.replace(member, generation=generation, previous=previous), member.published_at or now
        )
        if not recorded:
            _log.warning("rollout %s: %s published, but its claim was taken meanwhile", rollout.id, member.gateway)

    async def handle_report(self, topic_name: str, payload: bytes) -> bool:
        """Record one ``reported`` message; True when it moved a rollout member on.

        A payload that does not parse is logged and counted (:attr:`reports_refused`), never raised.
        """
        try:
            gateway, channel = parse_topic(topic_name)
            if channel is not Channel.REPORTED:
                return False
            report = decode_reported(payload, topic=topic_name, gateway=gateway)
        except FleetMessageError as exc:
            self.reports_refused += 1
            _log.warning("reported state refused (%s): %s", exc.reason, exc)
            return False
        if report.rollout is None:
            return False
        async with self._lock:
            for _ in range(_ACTION_ATTEMPTS):
                try:
                    rollout = await self.rollouts.get(report.rollout)
                except UnknownRollout:
                    return False
                member = await self.rollouts.member(report.rollout, gateway)
                changed = None if member is None else planner.apply_report(member, report, self._clock())
                if changed is None:
                    return False
                if await self.rollouts.save(rollout, [changed], header=False) is not None:
                    break
            else:
                _log.warning("rollout %s: report of %s not recorded: the rollout keeps changing", rollout.id, gateway)
                return False
        self._changed(rollout)
        self._wake.set()
        return True

    # -- running ---------------------------------------------------------------------------------------

    async def run(self, broker: BrokerSettings, *, client_id: str = ROLLOUT_CLIENT_ID) -> None:
        """Connect, subscribe to reports and plan every ``tick_s`` until cancelled; reconnects on loss."""
        failures = 0
        while True:
            try:
                async with connect(
                    broker, will_topic=f"fleet/server/rollouts/{client_id}", will_payload="offline", client_id=client_id
                ) as session:
                    failures = 0
                    await self.serve(session)
            except BmsgateError as exc:
                delay = _RECONNECT_S[min(failures, len(_RECONNECT_S) - 1)]
                failures += 1
                _log.warning("rollouts: broker session lost (%s); again in %.0f s", exc, delay)
                await asyncio.sleep(delay)

    async def serve(self, session: MqttSession) -> None:
        """Plan and read reports on an open session until it breaks.

        Raises:
            SinkError: the session broke.
        """

        async def publish(topic_name: str, payload: bytes) -> None:
            await session.publish(topic_name, payload, retain=True, qos=1)

        await session.subscribe(gateway_filter(Channel.REPORTED))

        async def read() -> None:
            async for message in session.messages():
                await self.handle_report(message.topic, message.payload)

        async def plan_loop() -> None:
            loop = asyncio.get_running_loop()
            while True:
                started = loop.time()
                try:
                    await self.step(publish)
                except BmsgateError as exc:
                    _log.warning("rollouts: planning step failed: %s", exc)
                cost = loop.time() - started
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._tick_s)
                # A large rollout's step takes real time: at most a fifth of a core goes to planning, the rest
                # stays with ingest and the API (the wake-ups of a burst of reports fold into one step).
                await asyncio.sleep(max(0.0, started + _MAX_PLANNING_SHARE_INVERSE * cost - loop.time()))
                self._wake.clear()

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(read())
                group.create_task(plan_loop())
        except* BmsgateError as failed:
            raise failed.exceptions[0] from None
