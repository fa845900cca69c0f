"""Rollout service figures on the real SQLite store: creating a rollout, publishing, a steady planning step.

Seeds N gateways into a fresh SQLite store, creates a one-group rollout with no rate limit to speak of,
and times: the creation (selection over the registry, groups, member rows), one planning step that
publishes to every gateway (generation raised, desired state built and "signed" with a placeholder, the
publisher a no-op: MQTT excluded), the next step (every gateway online: their timeout clocks start, a
write per member), and a steady step with every gateway waiting (what each ``tick_s`` costs while a
rollout is in flight).

    PYTHONPATH=src python benchmarks/fleet_rollouts.py [--gateways 1000 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bmsgate.fleet.protocol import PackVersion, StateMessage
from bmsgate.fleet.server.rollouts.model import Actor, RolloutOptions, RolloutSpec, RolloutTarget
from bmsgate.fleet.server.rollouts.service import RolloutService
from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.repository import Availability, IngestBatch
from bmsgate.fleet.updates import DesiredEnvelope, DesiredState, PackTarget, Signature

_PACK = PackTarget(pack="maps", version="2.0.0", target="packs/maps-2.0.0.tar", length=1000, sha256="ab" * 32)


def _placeholder_signature(state: DesiredState) -> DesiredEnvelope:
    return DesiredEnvelope(signed=state, signatures=(Signature(keyid="0" * 64, sig="00"),))


def _state(gateway: str, now: float) -> StateMessage:
    return StateMessage(
        v=1,
        gateway=gateway,
        sent_at=now,
        software_version="1.0.0",
        hardware="rpi4",
        uptime_s=10.0,
        interval_s=10.0,
        packs=[PackVersion(kind="protocol", name="jbd", version="3", sha256="a" * 64)],
    )


async def _measure(count: int, directory: Path) -> tuple[float, float, float, float]:
    store = await open_store(StoreSettings(data_dir=directory))
    try:
        now = time.time()
        batch = IngestBatch()
        for index in range(count):
            gateway = f"gw-{index:06d}"
            batch.states.append((_state(gateway, now), now))
            batch.availability.append((gateway, Availability.ONLINE, now))
        await store.write_batch(batch)
        service = RolloutService(store, _placeholder_signature)
        options = RolloutOptions(groups=(), jitter_s=0, rate_per_minute=100_000)
        spec = RolloutSpec(target=RolloutTarget(packs=(_PACK,)), options=options)
        started = time.perf_counter()
        await service.create(spec, Actor(name="bench", role="technician"))
        created = time.perf_counter() - started
        published = 0

        async def publish(_topic: str, _payload: bytes) -> None:
            nonlocal published
            published += 1

        started = time.perf_counter()
        await service.step(publish)
        publishing = time.perf_counter() - started
        assert published == count, published
        started = time.perf_counter()
        await service.step(publish)
        clocks = time.perf_counter() - started
        started = time.perf_counter()
        await service.step(publish)
        waiting = time.perf_counter() - started
        return created, publishing, clocks, waiting
    finally:
        await store.close()


async def _main(counts: list[int]) -> None:
    print(
        f"{'gateways':>9} {'create s':>9} {'publish all s':>14} {'desired/s':>10} {'clocks start ms':>16} "
        f"{'steady step ms':>15}"
    )
    for count in counts:
        with tempfile.TemporaryDirectory() as directory:
            created, publishing, clocks, waiting = await _measure(count, Path(directory))
        print(
            f"{count:>9} {created:>9.2f} {publishing:>14.2f} {count / publishing:>10.0f} {clocks * 1000:>16.1f} "
            f"{waiting * 1000:>15.1f}"
        )


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateways", type=int, nargs="+", default=[1000, 5000])
    asyncio.run(_main(parser.parse_args().gateways))


if __name__ == "__main__":
    main()
