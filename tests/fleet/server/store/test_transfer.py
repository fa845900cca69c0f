"""Moving a store from SQLite to PostgreSQL (and the command line that does it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.repository import AlarmAction, IngestBatch, NewAlarm, Resolution, Severity
from bmsgate.fleet.server.store.transfer import main
from tests.fleet.server.store.messages import T0, event, state, telemetry


async def _fill(data: Path) -> None:
    store = await open_store(StoreSettings(data_dir=data))
    try:
        batch = IngestBatch(states=[(state(), T0)], events=[(event(), T0)])
        batch.telemetry = [(telemetry(at=T0 + index * 10, seq=index), T0) for index in range(30)]
        await store.write_batch(batch)
        await store.rollup(T0 + 400)
        alarm, _ = await store.open_alarm(
            NewAlarm(gateway="gw-1", battery="b1", kind="low_soc", severity=Severity.WARNING, message="low", at=T0)
        )
        await store.add_alarm_history(alarm.id, T0 + 1, AlarmAction.NOTIFIED, detail="hook")
    finally:
        await store.close()


async def test_sqlite_to_postgresql_keeps_everything(tmp_path: Path, postgres_url: str) -> None:
    await _fill(tmp_path / "data")
    command = ["--from-data", str(tmp_path / "data"), "--to-postgres", postgres_url]
    assert await asyncio.to_thread(main, command) == 0
    assert await asyncio.to_thread(main, command) == 0  # again: no duplicates
    source = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    target = await open_store(StoreSettings(postgres_url=postgres_url))
    try:
        assert await target.list_gateways() == await source.list_gateways()
        for resolution in (Resolution.RAW, Resolution.MINUTE, Resolution.HOUR):
            for field in ("voltage", "cell_voltages"):
                want = await source.series("gw-1", "b1", field, T0 - 3600, T0 + 3600, resolution)
                assert await target.series("gw-1", "b1", field, T0 - 3600, T0 + 3600, resolution) == want
                assert want.points
        assert await target.list_alarms() == await source.list_alarms()
        (alarm,) = await target.list_alarms()
        assert await target.alarm_history(alarm.id) == await source.alarm_history(alarm.id)
        assert await target.list_events("gw-1") == await source.list_events("gw-1")
        new, created = await target.open_alarm(
            NewAlarm(gateway="gw-1", battery=None, kind="no_data", severity=Severity.CRITICAL, message="x", at=T0)
        )
        assert created
        assert new.id > alarm.id  # the id sequence moved past the imported ids
    finally:
        await source.close()
        await target.close()


def test_bad_arguments_and_an_unreachable_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--from-data", str(tmp_path)])
    status = main(["--from-data", str(tmp_path / "d"), "--to-postgres", "postgresql://nobody@127.0.0.1:1/none"])
    assert status == 1
    assert "error:" in capsys.readouterr().err
