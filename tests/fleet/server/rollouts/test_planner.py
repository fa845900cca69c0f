"""The pure rollout planner: groups, thresholds, approval, pacing, timeouts (with hypothesis properties)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.fleet.server.rollouts import planner
from bmsgate.fleet.server.rollouts.model import (
    DEFAULT_GROUPS,
    Member,
    MemberPhase,
    Outcome,
    Rollout,
    RolloutError,
    RolloutState,
)
from bmsgate.fleet.updates import FailureReason, UpdatePhase
from tests.fleet.server.rollouts.helpers import report, spec


def _rollout(gateways: Sequence[str], **options: Any) -> tuple[Rollout, list[Member]]:
    rollout_spec = spec(**options)
    groups = planner.split_groups(gateways, rollout_spec.options.groups, "r1")
    members = planner.new_members("r1", groups, rollout_spec.options.jitter_s)
    rollout = Rollout(id="r1", created_at=0.0, created_by="tester", spec=rollout_spec, group_count=len(groups))
    return rollout, members


def _ids(count: int) -> list[str]:
    return [f"gw-{index:04d}" for index in range(count)]


def _publish(step: planner.Plan, generation: int = 1) -> tuple[Rollout, list[Member]]:
    """Take a plan as the service would: the published members get their generation."""
    members = [
        dataclasses.replace(member, generation=generation) if member.gateway in step.publish else member
        for member in step.members
    ]
    return step.rollout, members


def _answer(members: list[Member], gateways: set[str], phase: UpdatePhase, now: float) -> list[Member]:
    answered = []
    for member in members:
        if member.gateway in gateways and member.generation is not None:
            reason = FailureReason.HEALTH if phase is UpdatePhase.REVERTED else None
            new = planner.apply_report(
                member,
                report(member.gateway, phase, generation=member.generation, rollout="r1", at=now, reason=reason),
                now,
            )
            answered.append(new or member)
        else:
            answered.append(member)
    return answered


def test_default_groups_are_canary_ten_fifteen_percent_and_the_rest() -> None:
    groups = planner.split_groups(_ids(1000), DEFAULT_GROUPS, "seed")
    assert [len(group) for group in groups] == [5, 10, 150, 835]
    assert sorted(gateway for group in groups for gateway in group) == _ids(1000)
    assert [len(group) for group in planner.split_groups(_ids(20), DEFAULT_GROUPS, "seed")] == [1, 10, 3, 6]
    assert [len(group) for group in planner.split_groups(_ids(3), DEFAULT_GROUPS, "seed")] == [1, 2]
    assert planner.split_groups(_ids(50), DEFAULT_GROUPS, "a") == planner.split_groups(_ids(50), DEFAULT_GROUPS, "a")


def test_first_group_starts_and_the_next_waits_for_the_success_threshold() -> None:
    rollout, members = _rollout(_ids(40), jitter_s=0)
    step = planner.plan(rollout, members, {}, 10.0)
    assert step.events == ("group 1 of 4 started",)
    canary = {member.gateway for member in members if member.group == 0}
    assert set(step.publish) == canary and len(canary) == 2
    rollout, members = _publish(step)
    assert planner.plan(rollout, members, {}, 11.0).publish == ()
    members = _answer(members, canary, UpdatePhase.COMMITTED, 12.0)
    step = planner.plan(rollout, members, {}, 13.0)
    assert step.events == ("group 2 of 4 started",)
    assert {member.gateway for member in members if member.group == 1} == set(step.publish)


def test_a_revert_in_the_canary_stops_the_rollout_and_nothing_more_is_published() -> None:
    rollout, members = _rollout(_ids(100), jitter_s=0)
    rollout, members = _publish(planner.plan(rollout, members, {}, 10.0))
    canary = sorted(member.gateway for member in members if member.group == 0)
    members = _answer(members, {canary[0]}, UpdatePhase.REVERTED, 20.0)
    step = planner.plan(rollout, members, {}, 21.0)
    assert step.rollout.state is RolloutState.STOPPED
    assert "group 1: 1 of 5 failed" in step.rollout.reason
    members = _answer(list(step.members), set(canary[1:]), UpdatePhase.COMMITTED, 22.0)
    assert planner.plan(step.rollout, members, {}, 500.0).publish == ()
    progress = planner.group_progress(step.rollout, members)
    assert progress[0].reasons == {"health": 1}
    assert progress[0].phases == {"reverted": 1, "committed": 4}


def test_approval_pauses_after_each_group_until_resumed() -> None:
    rollout, members = _rollout(_ids(30), jitter_s=0, approval=True)
    rollout, members = _publish(planner.plan(rollout, members, {}, 1.0))
    members = _answer(members, {m.gateway for m in members if m.group == 0}, UpdatePhase.COMMITTED, 2.0)
    step = planner.plan(rollout, members, {}, 3.0)
    assert step.rollout.state is RolloutState.WAITING_APPROVAL
    assert step.publish == ()
    approved = planner.resume(step.rollout, 4.0)
    assert approved.state is RolloutState.RUNNING and approved.current_group == 1
    assert len(planner.plan(approved, list(step.members), {}, 5.0).publish) == 10


def test_the_rate_limit_and_the_jitter_pace_the_publishing() -> None:
    rollout, members = _rollout(_ids(500), jitter_s=30, rate_per_minute=50, groups=({"percent": 100, "at_least": 1},))
    published: list[float] = []
    for second in range(240):
        step = planner.plan(rollout, members, {}, float(second))
        assert all(float(second) >= 30.0 or member.jitter_s <= second for member in step.changed)
        published.extend([float(second)] * len(step.publish))
        rollout, members = _publish(step)
    assert len(published) == 4 * 50
    for at in published:
        assert sum(1 for other in published if at <= other < at + 60) <= 50


def test_a_gateway_silent_after_it_came_online_times_out() -> None:
    rollout, members = _rollout(
        ["gw-a", "gw-b"], jitter_s=0, timeout_s=100, error_ratio=None, groups=({"percent": 100},)
    )
    rollout, members = _publish(planner.plan(rollout, members, {}, 0.0))
    step = planner.plan(rollout, members, {"gw-a": True}, 50.0)
    rollout, members = step.rollout, list(step.members)
    assert {m.gateway: m.clock_started_at for m in members} == {"gw-a": 50.0, "gw-b": None}
    step = planner.plan(rollout, members, {"gw-a": False}, 150.0)
    timed_out = {m.gateway: (m.phase, m.outcome, m.reason) for m in step.members}
    assert timed_out["gw-a"] == (MemberPhase.TIMEOUT.value, Outcome.FAILURE, "timeout")
    assert timed_out["gw-b"] == (MemberPhase.PUBLISHED.value, None, None)
    late = planner.apply_report(
        step.members[0] if step.members[0].gateway == "gw-a" else step.members[1],
        report("gw-a", UpdatePhase.COMMITTED, generation=1, rollout="r1"),
        160.0,
    )
    assert late is not None and late.outcome is Outcome.SUCCESS


def test_only_a_report_for_the_rollout_and_generation_counts() -> None:
    member = Member(rollout_id="r1", gateway="gw-a", group=0, jitter_s=0, generation=7, phase="published")
    assert planner.apply_report(member, report("gw-a", UpdatePhase.COMMITTED, generation=6, rollout="r1"), 1) is None
    assert planner.apply_report(member, report("gw-a", UpdatePhase.COMMITTED, generation=7, rollout="r2"), 1) is None
    staged = planner.apply_report(member, report("gw-a", UpdatePhase.STAGED, generation=7, rollout="r1"), 1)
    assert staged is not None and staged.outcome is None and staged.phase == "staged"
    failed = planner.apply_report(
        staged, report("gw-a", UpdatePhase.FAILED, generation=7, rollout="r1", reason=FailureReason.HARDWARE), 2
    )
    assert failed is not None and (failed.outcome, failed.reason) == (Outcome.FAILURE, "hardware")


def test_user_actions_respect_the_state() -> None:
    rollout, _ = _rollout(["gw-a"])
    paused = planner.pause(rollout, 1.0)
    assert paused.state is RolloutState.PAUSED
    assert planner.resume(paused, 2.0).state is RolloutState.RUNNING
    cancelled = planner.cancel(paused, 3.0)
    with pytest.raises(RolloutError, match="cancelled"):
        planner.resume(cancelled, 4.0)
    with pytest.raises(RolloutError):
        planner.pause(cancelled, 4.0)
    with pytest.raises(RolloutError, match="nothing to start"):
        planner.resume(rollout, 4.0)  # one gateway, one group: nothing after it


def test_resume_on_a_running_rollout_pushes_the_next_group() -> None:
    rollout, members = _rollout(_ids(30), jitter_s=0)
    rollout, members = _publish(planner.plan(rollout, members, {}, 1.0))
    assert planner.plan(rollout, members, {}, 2.0).publish == ()  # the canary has not answered
    pushed = planner.resume(rollout, 3.0)
    assert pushed.current_group == 1
    assert len(planner.plan(pushed, members, {}, 4.0).publish) == 10


_PHASES = st.sampled_from([UpdatePhase.COMMITTED, UpdatePhase.FAILED, UpdatePhase.REVERTED, UpdatePhase.STAGED])


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 120),
    rate=st.integers(1, 40),
    jitter=st.floats(0, 120),
    steps=st.lists(
        st.tuples(st.floats(0.5, 30), st.lists(st.tuples(st.integers(0, 119), _PHASES), max_size=8)),
        max_size=40,
    ),
    stop_at=st.integers(0, 40),
)
def test_properties_rate_membership_and_stop(
    count: int,
    rate: int,
    jitter: float,
    steps: list[tuple[float, list[tuple[int, UpdatePhase]]]],
    stop_at: int,
) -> None:
    gateways = _ids(count)
    rollout, members = _rollout(gateways, jitter_s=jitter, rate_per_minute=rate)
    now = 0.0
    published: list[float] = []
    online = {gateway: index % 2 == 0 for index, gateway in enumerate(gateways)}
    for index, (advance, answers) in enumerate(steps):
        now += advance
        if index == stop_at and rollout.state is RolloutState.RUNNING:
            rollout = planner.cancel(rollout, now)
        before = rollout.state
        step = planner.plan(rollout, members, online, now)
        assert set(step.publish) <= set(gateways)
        assert {member.gateway for member in step.members} == set(gateways)
        if before not in (RolloutState.RUNNING,) or step.rollout.state is RolloutState.STOPPED:
            assert step.publish == ()
        published.extend([now] * len(step.publish))
        rollout, members = _publish(step, generation=index + 1)
        for gateway_index, phase in answers:
            gateway = gateways[gateway_index % count]
            members = _answer(members, {gateway}, phase, now)
    for at in published:
        assert sum(1 for other in published if at <= other < at + planner.RATE_WINDOW_S) <= rate
    if rollout.state in (RolloutState.STOPPED, RolloutState.CANCELLED):
        assert planner.plan(rollout, members, online, now + 3600).publish == ()


def test_a_desired_state_that_expires_unanswered_is_issued_again() -> None:
    rollout, members = _rollout(["gw-a"], jitter_s=0, expires_s=1000, timeout_s=10)
    rollout, members = _publish(planner.plan(rollout, members, {}, 0.0))
    assert planner.plan(rollout, members, {}, 999.0).publish == ()
    step = planner.plan(rollout, members, {}, 1000.0)
    assert step.publish == ("gw-a",)
    assert step.events == ("1 desired states expired unanswered: issued again",)
    (member,) = step.members
    assert (member.phase, member.generation, member.published_at) == ("published", None, 1000.0)


def test_a_claim_never_recorded_is_pending_again_after_the_claim_timeout_and_published_anew() -> None:
    rollout, members = _rollout(_ids(3), groups=(), jitter_s=0)
    first = planner.plan(rollout, members, {}, 0.0)
    assert len(first.publish) == 3
    # The claiming process died: the members stay "published" without a generation.
    claimed = list(first.members)
    assert {(member.phase, member.generation) for member in claimed} == {(MemberPhase.PUBLISHED.value, None)}
    assert planner.plan(first.rollout, claimed, {}, planner.CLAIM_TIMEOUT_S - 1).publish == ()
    again = planner.plan(first.rollout, claimed, {}, planner.CLAIM_TIMEOUT_S)
    assert sorted(again.publish) == _ids(3)
    assert any("never recorded" in event for event in again.events)
    # A recorded one (with its generation) is left alone.
    recorded = [dataclasses.replace(claimed[0], generation=1), *claimed[1:]]
    assert claimed[0].gateway not in planner.plan(first.rollout, recorded, {}, planner.CLAIM_TIMEOUT_S).publish
