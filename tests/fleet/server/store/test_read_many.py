"""Reading many gateways by id at once (the live stream's read), and the summary form, on both backends."""

from __future__ import annotations

import time

from bmsgate.fleet.server.api.sample_fleet import seed_fleet
from bmsgate.fleet.server.api.views import gateway_view
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
    # A read this large builds its records aside (PostgreSQL: in a thread, off the event loop).
    everyone = await store.list_gateway_summaries()
    assert len(everyone) == 1200
    assert next(record for record in everyone if record.id == "site-00600").open_alarms == 1


async def test_the_summary_form_gives_every_overview_value_of_the_full_read(store: Repository) -> None:
    now = time.time()
    await seed_fleet(store, 40, now=now, templated=True)
    await store.open_alarm(
        NewAlarm(gateway="site-00007", battery="pack1", kind="low_soc", severity=Severity.WARNING, message="", at=now)
    )
    full = await store.list_gateways()
    summaries = await store.list_gateway_summaries()
    assert [record.id for record in summaries] == [record.id for record in full]
    for whole, summary in zip(full, summaries, strict=True):
        assert gateway_view(summary, summary=True) == gateway_view(whole, summary=True)
        assert summary.inverter is None
        reported = [battery for battery in whole.batteries if battery.snapshot is not None]
        assert [battery.id for battery in summary.batteries] == [battery.id for battery in reported]
        for battery, kept in zip(reported, summary.batteries, strict=True):
            assert battery.snapshot is not None
            assert kept.snapshot == {
                "soc": battery.snapshot.get("soc"),
                "cell_delta": battery.snapshot.get("cell_delta"),
            }
    some = ["site-00003", "site-00007", "nobody"]
    assert await store.get_gateway_summaries(some) == [record for record in summaries if record.id in some]
    assert await store.get_gateway_summaries([]) == []
