"""How long one rollout planning step takes for large rollouts (the pure planner alone, no store, no MQTT).

Prints the time of a step with every member pending (the first group starts), with every member published
and waiting (timeout clocks checked), and the time to split and create the members.

    PYTHONPATH=src python benchmarks/fleet_rollout_planner.py [--gateways 1000 10000 50000]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from bmsgate.fleet.server.rollouts import planner
from bmsgate.fleet.server.rollouts.model import Rollout, RolloutOptions, RolloutSpec, RolloutTarget
from bmsgate.fleet.updates import PackTarget

_PACK = PackTarget(pack="maps", version="2.0.0", target="packs/maps-2.0.0.tar", length=1000, sha256="ab" * 32)


def _measure(count: int) -> tuple[float, float, float]:
    gateways = [f"gw-{index:06d}" for index in range(count)]
    spec = RolloutSpec(target=RolloutTarget(packs=(_PACK,)), options=RolloutOptions(jitter_s=0, rate_per_minute=100))
    started = time.perf_counter()
    groups = planner.split_groups(gateways, spec.options.groups, "bench")
    members = planner.new_members("bench", groups, spec.options.jitter_s)
    created = time.perf_counter() - started
    rollout = Rollout(id="bench", created_at=0.0, created_by="bench", spec=spec, group_count=len(groups))
    started = time.perf_counter()
    first = planner.plan(rollout, members, {}, 1.0)
    pending_step = time.perf_counter() - started
    published = [dataclasses.replace(member, generation=1, published_at=0.0, phase="published") for member in members]
    online = dict.fromkeys(gateways, True)
    started = time.perf_counter()
    planner.plan(first.rollout, published, online, 100.0)
    waiting_step = time.perf_counter() - started
    return created, pending_step, waiting_step


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateways", type=int, nargs="+", default=[1000, 10_000, 50_000])
    args = parser.parse_args()
    print(f"{'gateways':>9} {'create ms':>10} {'step (pending) ms':>18} {'step (all waiting) ms':>22}")
    for count in args.gateways:
        created, pending_step, waiting_step = _measure(count)
        print(f"{count:>9} {created * 1000:>10.1f} {pending_step * 1000:>18.1f} {waiting_step * 1000:>22.1f}")


if __name__ == "__main__":
    main()
