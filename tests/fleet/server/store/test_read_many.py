"""Reading many gateways by id at once (the live stream's read), on both backends."""

from __future__ import annotations

import time

from bmsgate.fleet.server.api.sample_fleet import seed_fleet
from bmsgate.fleet.server.store.repository import NewAlarm, Repository, Severity


async def test_get_gateways_reads_the_ones_asked_for_in_batches(store: Repository) -> None:
    now = time.time()
    await seed_fleet(store, 1200, now=now, templated=True)
    await store.open_alarm(
        NewAlarm(gateway="site-00600", battery="pack1", kind="low_soc", severity=Severity.CRITICAL, message="", at=now)
    )
    wanted = {f"site-{index:05d}" for index in range(0, 1200, 2)} | {"site-99999", "never-seen"}
    records = await store.get_gateways(wanted)
    assert [record.id for record in records] == sorted(f"site-{index:05d}" for index in range(0, 1200, 2))
    by_id = {record.id: record for record in records}
    assert by_id["site-00600"].open_alarms == 1
    assert by_id["site-00600"].worst_severity == Severity.CRITICAL
    assert by_id["site-00002"].open_alarms == 0
    # The same record as one read alone, batteries and all.
    assert by_id["site-00006"] == await store.get_gateway("site-00006")
    assert len(by_id["site-00006"].batteries) == 2
    assert await store.get_gateways([]) == []
    assert await store.get_gateways(["nobody"]) == []
