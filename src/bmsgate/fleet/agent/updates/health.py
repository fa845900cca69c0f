"""The health check after a switch: every changed definition decodes plausibly, every changed output serves.

It watches the hub for snapshots published after the switch (the supervisor publishes a battery's snapshot
under its poll lock, so each one was decoded by the new definition) and the supervisor's failure count per
battery (a definition that no longer decodes shows as failed polls, never as a snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Final

from bmsgate.fleet.agent.updates.plan import ActivationPlan
from bmsgate.fleet.agent.updates.plausibility import implausibility
from bmsgate.runtime.hub import HubUpdate
from bmsgate.runtime.supervisor import Supervisor

__all__ = ["HealthSettings", "check_health"]

_TICK: Final = 0.2


@dataclasses.dataclass(frozen=True, slots=True)
class HealthSettings:
    """How long and how hard the check looks."""

    polls: int = 5
    """Good polls needed from every battery using a changed definition."""
    failed_polls: int = 3
    """Failed polls in a row (a definition that does not decode) that fail the check at once."""
    timeout: float = 300.0
    """Seconds within which the good polls must come."""
    min_duration: float = 5.0
    """Seconds the changed outputs must keep serving (also when no battery's definition changed)."""


def _output_problem(supervisor: Supervisor, name: str, bus_failures: dict[str, int], *, final: bool) -> str | None:
    sinks = [sink for sink in supervisor.sinks if sink.name == name]
    if not sinks:
        return f"output {name}: no longer running"
    sink = sinks[0]
    endpoint = getattr(sink, "endpoint", None)
    listening = getattr(endpoint, "listening", None)
    # Judged at the end only: a server may still be opening its port when an update comes early after a start.
    if final and isinstance(listening, asyncio.Event) and not listening.is_set():
        return f"output {name}: its server is not listening"
    failures = getattr(sink, "bus_failures", None)
    if isinstance(failures, int) and failures > bus_failures.get(name, failures):
        return f"output {name}: {failures - bus_failures[name]} bus failures since the switch"
    return None


async def check_health(supervisor: Supervisor, plan: ActivationPlan, settings: HealthSettings) -> str | None:
    """Watch the switched gateway; the first problem found, described (None: healthy).

    Problems: a battery with an implausible value (named), a streak of failed polls, too few good polls
    within the time limit, a changed output that stopped serving.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    good = dict.fromkeys(plan.batteries, 0)
    seen: dict[str, float] = {}
    bus_failures = {
        sink.name: failures
        for sink in supervisor.sinks
        if isinstance(failures := getattr(sink, "bus_failures", None), int)
    }
    with supervisor.hub.subscribe("update-health", replay=False) as subscription:
        while True:
            updates: list[HubUpdate] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TICK):
                    updates.append(await subscription.get())
            while (pending := subscription.get_nowait()) is not None:
                updates.append(pending)
            for update in updates:
                battery_id = update.battery_id
                snapshot = update.snapshot
                if battery_id not in good or snapshot is None or seen.get(battery_id) == update.received_at:
                    continue
                seen[battery_id] = update.received_at
                problem = implausibility(snapshot)
                if problem is not None:
                    return f"battery {battery_id}: {problem}"
                good[battery_id] += 1
            for battery_id in good:
                runtime = supervisor.batteries.get(battery_id)
                if runtime is None:
                    return f"battery {battery_id}: no longer running"
                if runtime.consecutive_failures >= settings.failed_polls:
                    error = runtime.client.stats.last_error or "no reply"
                    return f"battery {battery_id}: {runtime.consecutive_failures} failed polls in a row ({error})"
            elapsed = loop.time() - started
            passed = elapsed >= settings.min_duration and all(count >= settings.polls for count in good.values())
            final = passed or elapsed >= settings.timeout
            for output in plan.outputs:
                problem = _output_problem(supervisor, output, bus_failures, final=final)
                if problem is not None:
                    return problem
            if passed:
                return None
            if final:
                short = ", ".join(f"{b} {n}" for b, n in sorted(good.items()) if n < settings.polls)
                return f"too few good polls within {settings.timeout:g} s (of {settings.polls}: {short})"
