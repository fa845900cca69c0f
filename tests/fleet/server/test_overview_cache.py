"""The overview read model's kept orders and counts: exact in a small fleet, recomputed aside in a large one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bmsgate.fleet.server.api.fleet_query import SortKey
from bmsgate.fleet.server.api.overview import OverviewCache
from bmsgate.fleet.server.api.sample_fleet import seed_fleet
from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.repository import NewAlarm, Repository, Severity


async def raise_alarm(store: Repository, cache: OverviewCache, gateway: str) -> None:
    await store.open_alarm(
        NewAlarm(
            gateway=gateway, battery="pack1", kind="low_soc", severity=Severity.WARNING, message="", at=time.time()
        )
    )
    await cache.update_many(await store.get_gateways([gateway]))


async def test_a_small_fleet_is_always_exact(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await seed_fleet(store, 40, now=time.time(), templated=True)
        cache = OverviewCache(store)
        assert (await cache.counts()).with_alarms == 0
        await raise_alarm(store, cache, "site-00017")
        assert (await cache.counts()).with_alarms == 1
        assert (await cache.ordered(SortKey.STATE))[0].view.id == "site-00017"
        assert cache.full_reads == 1
    finally:
        await store.close()


async def test_a_large_fleet_answers_the_kept_value_while_it_is_recomputed(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await seed_fleet(store, 40, now=time.time(), templated=True)
        # "Large" from 10 gateways on; a kept value may be 0.2 s old (10 x its cost is far less here).
        cache = OverviewCache(store, exact_below=10, derived_max_age_s=0.2)
        assert (await cache.counts()).with_alarms == 0
        assert (await cache.ordered(SortKey.STATE))[0].view.id != "site-00017"
        await raise_alarm(store, cache, "site-00017")
        # Within the allowed age: the kept values; the rows themselves are current.
        assert (await cache.counts()).with_alarms == 0
        [row] = [entry for entry in await cache.ordered(SortKey.STATE) if entry.view.id == "site-00017"]
        assert row.view.open_alarms == 1
        await asyncio.sleep(0.25)
        # Too old: still answered as kept, recomputed aside; the next answer has the change.
        assert (await cache.counts()).with_alarms == 0
        async with asyncio.timeout(5):
            while (await cache.counts()).with_alarms != 1:
                await asyncio.sleep(0.01)
            while (await cache.ordered(SortKey.STATE))[0].view.id != "site-00017":
                await asyncio.sleep(0.01)
        await cache.close()
    finally:
        await store.close()
