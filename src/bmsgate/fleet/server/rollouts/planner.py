"""The rollout planner: pure decisions, no I/O.

State in (a :class:`~.model.Rollout`, its members, which gateways are online, the time), decisions out (a
:class:`Plan`: the rollout and members as they are now, the gateways to publish a desired state to, what
happened for the audit log). The service stores the plan and does the publishing; a test drives the planner
with any clock it likes.

The rules (hawkBit's, with the pacing users ask for):

* the members are split into groups once, at creation (:func:`split_groups`), in a shuffled order seeded by
  the rollout id, so the canary is not always the alphabetically first gateways;
* the first group starts at once; the next one when the current group's committed share reaches
  ``success_threshold`` — or the rollout waits for approval (``approval``), which ``resume`` gives;
* the failed, reverted or timed-out share of any started group reaching ``error_ratio``, or the whole
  rollout's failures reaching ``error_count``, stops the rollout (final; nothing more is published);
* a member is published at its group's start plus its own jitter, and never more than ``rate_per_minute``
  in any 60 s (counted from the members' ``published_at``);
* a member is claimed for publishing (``published``, no generation yet) in the same stored change as the
  decision; a claim never recorded within :data:`CLAIM_TIMEOUT_S` (its process died) is pending again;
* a desired state that expires unanswered (the gateway stayed offline) is issued again;
* a member counts as done only by its own report for this rollout and generation (:func:`apply_report`);
  one that stays without a final answer ``timeout_s`` after it was first seen online with the desired
  state fails with reason ``timeout``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from bmsgate.fleet.server.rollouts.model import (
    ACTIVE_STATES,
    FAILURE_PHASES,
    SUCCESS_PHASES,
    GroupSize,
    Member,
    MemberPhase,
    Outcome,
    Rollout,
    RolloutError,
    RolloutState,
    RolloutTarget,
)
from bmsgate.fleet.updates import ReportedState

__all__ = [
    "CLAIM_TIMEOUT_S",
    "RATE_WINDOW_S",
    "GroupProgress",
    "PhaseCount",
    "Plan",
    "apply_report",
    "cancel",
    "failed_members",
    "group_progress",
    "new_members",
    "pause",
    "plan",
    "progress_from_counts",
    "published_members",
    "resume",
    "split_groups",
]

RATE_WINDOW_S: Final = 60.0
CLAIM_TIMEOUT_S: Final = 600.0
"""A member claimed for publishing (published, no generation yet) this long ago is pending again: the
process that claimed it died before it recorded the publish (a live one records within seconds)."""


def split_groups(gateways: Sequence[str], sizes: Sequence[GroupSize], seed: str) -> list[list[str]]:
    """Split the gateways into non-empty groups: one per size while gateways last, then the rest.

    The order is a shuffle seeded by `seed` (the rollout id): the same rollout always splits the same way.
    """
    order = sorted(gateways)
    random.Random(seed).shuffle(order)
    total = len(order)
    groups: list[list[str]] = []
    start = 0
    for size in sizes:
        if start >= total:
            break
        count = max(size.at_least, math.ceil(total * size.percent / 100))
        if size.at_most is not None:
            count = min(count, size.at_most)
        groups.append(order[start : start + count])
        start += count
    if start < total:
        groups.append(order[start:])
    return groups


def new_members(
    rollout_id: str,
    groups: Sequence[Sequence[str]],
    jitter_s: float,
    *,
    targets: Mapping[str, RolloutTarget] | None = None,
) -> list[Member]:
    """The members of a new rollout, each with its group and a random start jitter in ``[0, jitter_s]``."""
    spread = random.Random(f"jitter:{rollout_id}")
    targets = targets or {}
    return [
        Member(
            rollout_id=rollout_id,
            gateway=gateway,
            group=index,
            jitter_s=round(spread.uniform(0, jitter_s), 3),
            target=targets.get(gateway),
        )
        for index, group in enumerate(groups)
        for gateway in group
    ]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one planning step decided."""

    rollout: Rollout
    members: tuple[Member, ...]
    """Every member as it is after this step (the ones to publish marked published at `now`)."""
    changed: tuple[Member, ...]
    """The members this step changed (to store)."""
    publish: tuple[str, ...]
    """Gateways to publish the desired state to now, in order (a subset of ``changed``)."""
    events: tuple[str, ...]
    """What happened, for the audit log (a group started, the rollout stopped or completed)."""

    @property
    def rollout_changed(self) -> bool:
        """Whether the rollout's header changed (to store)."""
        return bool(self.events)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GroupProgress:
    """One group's counts."""

    index: int
    size: int
    started_at: float | None
    phases: Mapping[str, int]
    """Members per phase (``pending``, ``published``, the gateway's phases, ``timeout``)."""
    succeeded: int
    failed: int
    reasons: Mapping[str, int]
    """Failures per reason."""


PhaseCount = tuple[int, str, str | None, str | None, int]
"""``(group, phase, outcome, reason, count)``: members of one group with the same phase, outcome and reason."""


def group_progress(rollout: Rollout, members: Iterable[Member]) -> list[GroupProgress]:
    """The counts per group (every group, started or not) of these members."""
    counts: dict[tuple[int, str, str | None, str | None], int] = {}
    for member in members:
        key = (member.group, member.phase, None if member.outcome is None else member.outcome.value, member.reason)
        counts[key] = counts.get(key, 0) + 1
    return progress_from_counts(rollout, [(*key, count) for key, count in counts.items()])


def progress_from_counts(rollout: Rollout, counts: Iterable[PhaseCount]) -> list[GroupProgress]:
    """The counts per group from member counts by group, phase, outcome and reason (the store's aggregate)."""
    phases: list[dict[str, int]] = [{} for _ in range(rollout.group_count)]
    reasons: list[dict[str, int]] = [{} for _ in range(rollout.group_count)]
    sizes = [0] * rollout.group_count
    succeeded = [0] * rollout.group_count
    failed = [0] * rollout.group_count
    for group, phase, outcome, reason, count in counts:
        if not 0 <= group < rollout.group_count:
            continue
        sizes[group] += count
        phases[group][phase] = phases[group].get(phase, 0) + count
        if outcome == Outcome.SUCCESS:
            succeeded[group] += count
        elif outcome == Outcome.FAILURE:
            failed[group] += count
            named = reason or phase
            reasons[group][named] = reasons[group].get(named, 0) + count
    return [
        GroupProgress(
            index=index,
            size=sizes[index],
            started_at=rollout.group_started_at[index] if index < len(rollout.group_started_at) else None,
            phases=phases[index],
            succeeded=succeeded[index],
            failed=failed[index],
            reasons=reasons[index],
        )
        for index in range(rollout.group_count)
    ]


def apply_report(member: Member, report: ReportedState, now: float) -> Member | None:
    """The member after its gateway's report, or None when the report is not about this member's publish.

    Only a report naming this rollout and the generation published to the member counts. A final outcome
    stays, except a timeout, which the gateway's own late answer replaces.
    """
    if member.generation is None or report.generation != member.generation or report.rollout != member.rollout_id:
        return None
    if member.outcome is not None and member.phase != MemberPhase.TIMEOUT:
        return None
    phase = report.phase.value
    outcome = Outcome.SUCCESS if phase in SUCCESS_PHASES else Outcome.FAILURE if phase in FAILURE_PHASES else None
    reason = None
    if outcome is Outcome.FAILURE:
        reason = report.reason.value if report.reason is not None else phase
    changed = dataclasses.replace(
        member,
        phase=phase,
        outcome=outcome,
        reason=reason,
        detail=report.detail,
        reported_at=report.at,
        clock_started_at=member.clock_started_at if member.clock_started_at is not None else now,
    )
    return None if changed == member else changed


def _time_members(
    rollout: Rollout, members: Sequence[Member], online: Mapping[str, bool], now: float
) -> dict[str, Member]:
    """Start the timeout clocks of members seen online, and fail the ones whose clock ran out."""
    changed: dict[str, Member] = {}
    timeout = rollout.spec.options.timeout_s
    for member in members:
        if member.generation is None or member.outcome is not None:
            continue
        started = member.clock_started_at
        if started is None and online.get(member.gateway, False):
            started = now
        if started is not None and now - started >= timeout:
            changed[member.gateway] = dataclasses.replace(
                member,
                phase=MemberPhase.TIMEOUT.value,
                outcome=Outcome.FAILURE,
                reason="timeout",
                detail=f"no final answer {timeout:.0f} s after it was online with the desired state",
                clock_started_at=started,
            )
        elif started != member.clock_started_at:
            changed[member.gateway] = dataclasses.replace(member, clock_started_at=started)
    return changed


def _abandoned_claims(members: Sequence[Member], now: float) -> dict[str, Member]:
    """Members claimed for publishing longer than :data:`CLAIM_TIMEOUT_S` ago and never recorded."""
    return {
        member.gateway: dataclasses.replace(member, phase=MemberPhase.PENDING.value, published_at=None)
        for member in members
        if member.phase == MemberPhase.PUBLISHED
        and member.generation is None
        and member.published_at is not None
        and now - member.published_at >= CLAIM_TIMEOUT_S
    }


def _expired(rollout: Rollout, members: Sequence[Member], now: float) -> dict[str, Member]:
    """Members whose desired state expired without a final answer (offline that long): pending again.

    They are published again (a new generation, within the rate limit); what they had before this rollout
    stays recorded for a rollback.
    """
    validity = rollout.spec.options.expires_s
    return {
        member.gateway: dataclasses.replace(
            member, phase=MemberPhase.PENDING.value, generation=None, published_at=None, clock_started_at=None
        )
        for member in members
        if member.outcome is None and member.published_at is not None and now - member.published_at >= validity
    }


def _error_reason(rollout: Rollout, members: Sequence[Member]) -> str | None:
    options = rollout.spec.options
    sizes = [0] * rollout.group_count
    failed = [0] * rollout.group_count
    for member in members:
        sizes[member.group] += 1
        if member.outcome is Outcome.FAILURE:
            failed[member.group] += 1
    if options.error_count is not None and sum(failed) >= options.error_count:
        return f"error threshold: {sum(failed)} failures, the limit is {options.error_count}"
    if options.error_ratio is None:
        return None
    for group in range(len(rollout.group_started_at)):
        size, count = sizes[group], failed[group]
        if size and count / size >= options.error_ratio:
            return (
                f"error threshold: group {group + 1}: {count} of {size} failed "
                f"({count / size:.0%}, the limit is {options.error_ratio:.0%})"
            )
    return None


def _succeeded_share(members: Sequence[Member], group: int) -> float:
    size = sum(1 for member in members if member.group == group)
    done = sum(1 for member in members if member.group == group and member.outcome is Outcome.SUCCESS)
    return done / size if size else 1.0


def plan(rollout: Rollout, members: Sequence[Member], online: Mapping[str, bool], now: float) -> Plan:
    """One planning step at `now` (see the module docstring for the rules)."""
    timed = _time_members(rollout, members, online, now)
    current = [timed.get(member.gateway, member) for member in members]
    changed = dict(timed)
    events: list[str] = []
    if rollout.state not in ACTIVE_STATES:
        return _plan(rollout, current, changed, (), events)
    reason = _error_reason(rollout, current)
    if reason is not None:
        stopped = dataclasses.replace(rollout, state=RolloutState.STOPPED, reason=reason, updated_at=now)
        return _plan(stopped, current, changed, (), [f"stopped: {reason}"])
    if rollout.state is RolloutState.RUNNING:
        abandoned = _abandoned_claims(current, now)
        if abandoned:
            changed.update(abandoned)
            current = [abandoned.get(member.gateway, member) for member in current]
            events.append(f"{len(abandoned)} claims for publishing never recorded: pending again")
        expired = _expired(rollout, current, now)
        if expired:
            changed.update(expired)
            current = [expired.get(member.gateway, member) for member in current]
            events.append(f"{len(expired)} desired states expired unanswered: issued again")
        rollout = _advance(rollout, current, now, events)
    if rollout.state is not RolloutState.RUNNING:
        return _plan(rollout, current, changed, (), events)
    publish = _due(rollout, current, now)
    for gateway in publish:
        member = changed.get(gateway) or next(member for member in current if member.gateway == gateway)
        changed[gateway] = dataclasses.replace(member, phase=MemberPhase.PUBLISHED.value, published_at=now)
    current = [changed.get(member.gateway, member) for member in current]
    return _plan(rollout, current, changed, tuple(publish), events)


def _plan(
    rollout: Rollout,
    current: Sequence[Member],
    changed: Mapping[str, Member],
    publish: Sequence[str],
    events: Sequence[str],
) -> Plan:
    return Plan(
        rollout=rollout,
        members=tuple(current),
        changed=tuple(changed.values()),
        publish=tuple(publish),
        events=tuple(events),
    )


def _advance(rollout: Rollout, members: Sequence[Member], now: float, events: list[str]) -> Rollout:
    """Start the first group, the next one, ask for approval, or complete."""
    if rollout.current_group < 0:
        events.append(f"group 1 of {rollout.group_count} started")
        return dataclasses.replace(rollout, group_started_at=(now,), updated_at=now)
    if all(member.outcome is not None for member in members):
        failed = sum(1 for member in members if member.outcome is Outcome.FAILURE)
        events.append(f"completed: {len(members) - failed} succeeded, {failed} failed")
        return dataclasses.replace(rollout, state=RolloutState.COMPLETED, reason="", updated_at=now)
    last = rollout.current_group
    if last + 1 >= rollout.group_count:
        return rollout
    share = _succeeded_share(members, last)
    if share < rollout.spec.options.success_threshold:
        return rollout
    if rollout.spec.options.approval:
        reason = f"group {last + 1} reached the success threshold ({share:.0%}): approve with resume"
        events.append(f"waiting for approval: {reason}")
        return dataclasses.replace(rollout, state=RolloutState.WAITING_APPROVAL, reason=reason, updated_at=now)
    return _start_next(rollout, now, events)


def _start_next(rollout: Rollout, now: float, events: list[str]) -> Rollout:
    index = rollout.current_group + 1
    events.append(f"group {index + 1} of {rollout.group_count} started")
    return dataclasses.replace(
        rollout,
        state=RolloutState.RUNNING,
        reason="",
        group_started_at=(*rollout.group_started_at, now),
        updated_at=now,
    )


def _due(rollout: Rollout, members: Sequence[Member], now: float) -> list[str]:
    """The pending members of started groups whose start time has come, within the rate limit."""
    recent = sum(
        1 for member in members if member.published_at is not None and now - member.published_at < RATE_WINDOW_S
    )
    budget = rollout.spec.options.rate_per_minute - recent
    if budget <= 0:
        return []
    started = rollout.group_started_at
    ready = sorted(
        (started[member.group] + member.jitter_s, member.gateway)
        for member in members
        if member.phase == MemberPhase.PENDING
        and member.group < len(started)
        and started[member.group] + member.jitter_s <= now
    )
    return [gateway for _, gateway in ready[:budget]]


# -- user actions ------------------------------------------------------------------------------------------


def pause(rollout: Rollout, now: float) -> Rollout:
    """Pause a running rollout (or one waiting for approval).

    Raises:
        RolloutError: the rollout is not active.
    """
    if rollout.state not in ACTIVE_STATES:
        raise RolloutError(f"rollout {rollout.id} is {rollout.state.value}: nothing to pause")
    return dataclasses.replace(rollout, state=RolloutState.PAUSED, reason="paused by a user", updated_at=now)


def resume(rollout: Rollout, now: float) -> Rollout:
    """Resume a paused rollout; approve the next group of one waiting for approval, or of a running one.

    On a running rollout this starts the next group now, before the current one reached the success
    threshold (a user's push, e.g. past a canary gateway that stays offline).

    Raises:
        RolloutError: the rollout is over, or running with no group left to start.
    """
    if rollout.state is RolloutState.WAITING_APPROVAL:
        return _start_next(rollout, now, [])
    if rollout.state is RolloutState.PAUSED:
        return dataclasses.replace(rollout, state=RolloutState.RUNNING, reason="", updated_at=now)
    if rollout.state is RolloutState.RUNNING and 0 <= rollout.current_group < rollout.group_count - 1:
        return _start_next(rollout, now, [])
    if rollout.state is RolloutState.RUNNING:
        raise RolloutError(f"rollout {rollout.id} runs its last group: nothing to start")
    raise RolloutError(f"rollout {rollout.id} is {rollout.state.value}: it does not resume")


def cancel(rollout: Rollout, now: float) -> Rollout:
    """Cancel an active rollout: nothing more is published; gateways already started keep their target.

    Raises:
        RolloutError: the rollout is already over.
    """
    if rollout.state not in ACTIVE_STATES:
        raise RolloutError(f"rollout {rollout.id} is {rollout.state.value}: nothing to cancel")
    return dataclasses.replace(rollout, state=RolloutState.CANCELLED, reason="cancelled by a user", updated_at=now)


def failed_members(members: Iterable[Member]) -> list[Member]:
    """The members whose outcome is a failure (what ``retry-failed`` takes again)."""
    return [member for member in members if member.outcome is Outcome.FAILURE]


def published_members(members: Iterable[Member]) -> list[Member]:
    """The members a desired state was published to (what a rollback takes back)."""
    return [member for member in members if member.generation is not None]
