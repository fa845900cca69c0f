"""The apply state machine on a running simulated gateway with a real Modbus TCP server (local artifacts)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bmsgate.catalog import Catalog, Kind, default_catalog
from bmsgate.fleet.agent.updates.journal import DAMAGED_SUFFIX, JOURNAL_FILE, Journal, read_journal, write_journal
from bmsgate.fleet.agent.updates.source import Progress
from bmsgate.fleet.updates import FailureReason, UpdatePhase
from tests.fleet.agent.updates.conftest import (
    SOC_TIMES_TEN,
    VOLTAGE_TIMES_TEN,
    Artifacts,
    bench,
    desired,
    generic_map_text,
    jbd_text,
    until,
)
from tests.fleet.agent.updates.signed import SignedDirectory, sign

_BUILTIN_JBD = Catalog(system_dir="/nonexistent").get(Kind.PROTOCOL, "jbd").sha256


def _slots(state_dir: Path) -> list[str]:
    slots = state_dir / "packs" / "slots"
    return sorted(entry.name for entry in slots.iterdir()) if slots.is_dir() else []


async def test_a_register_map_pack_reaches_the_modbus_server_and_survives_a_restart(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "usb")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text(soc_scale=0.1)})
    async with bench(tmp_path / "state") as site:
        before = await site.soc_register()
        assert 60 <= before <= 90, "the built-in map: SoC in whole per cent"
        await site.engine.install_local(desired(1, maps), artifacts.directory, site.reports.append)
        assert site.reports.phases() == [
            UpdatePhase.DOWNLOADING,
            UpdatePhase.DOWNLOADING,
            UpdatePhase.VERIFIED,
            UpdatePhase.STAGED,
            UpdatePhase.ACTIVE_PENDING,
            UpdatePhase.COMMITTED,
        ]
        # The same server, the same master connection: the register now holds SoC in 0.1 %.
        await site.modbus.refreshed.wait()
        after = await site.soc_register()
        soc = site.soc()
        assert soc is not None
        assert abs(after - soc * 10) <= 20, (after, soc)
        committed = site.reports.last
        assert committed.generation == 1
        assert committed.running.pack_names == ("site-maps@2",)
        assert [(item.kind, item.name) for item in committed.running.packs] == [("register-map", "generic")]
        # Before the switch, the report still named what ran then (nothing): never the new version early.
        assert site.reports[3].running.pack_names == ()
        assert site.reports[4].running.pack_names == ("site-maps@2",)
        assert site.reports[0].progress is not None and site.reports[0].progress.done == 0
        assert site.reports[1].progress is not None and site.reports[1].progress.done == maps.length
        assert default_catalog().get(Kind.REGISTER_MAP, "generic").source.layer == "pack"
        # The battery's definition did not change: its client was left alone.
        assert site.gateway.supervisor.batteries["house"].client.protocol.definition.sha256 == _BUILTIN_JBD
    journal = read_journal(tmp_path / "state" / "packs")
    assert journal.phase is UpdatePhase.COMMITTED
    assert journal.committed is not None and journal.committed.slot == "1"
    assert _slots(tmp_path / "state") == ["1"]
    # A restart starts with the committed slot: the new map serves from the first register image on.
    async with bench(tmp_path / "state") as site:
        await site.modbus.refreshed.wait()
        soc = site.soc()
        assert soc is not None
        assert abs(await site.soc_register() - soc * 10) <= 20
        await site.engine.resume(site.reports.append)
        assert site.reports.phases() == [UpdatePhase.COMMITTED]
        assert site.reports.last.running.pack_names == ("site-maps@2",)


@pytest.mark.parametrize(
    ("edit", "named"), [(SOC_TIMES_TEN, "soc of 760 %"), (VOLTAGE_TIMES_TEN, "but its cells add up to")]
)
async def test_a_protocol_that_decodes_implausible_values_is_reverted_on_its_own(
    tmp_path: Path, edit: tuple[str, str], named: str
) -> None:
    artifacts = Artifacts(tmp_path / "usb")
    broken = artifacts.build("jbd-fix", "1", {"protocols/jbd.yaml": jbd_text(edit)})
    async with bench(tmp_path / "state") as site:
        await site.engine.install_local(desired(1, broken), artifacts.directory, site.reports.append)
        assert site.reports.phases()[-2:] == [UpdatePhase.ACTIVE_PENDING, UpdatePhase.REVERTED]
        reverted = site.reports.last
        assert reverted.reason is FailureReason.HEALTH
        assert "house" in reverted.detail
        assert named in reverted.detail
        assert reverted.running.pack_names == ()
        # The old definition serves again: new polls decode plausible values.
        runtime = site.gateway.supervisor.batteries["house"]
        assert runtime.client.protocol.definition.sha256 == _BUILTIN_JBD
        polls = runtime.client.stats.polls
        await until(lambda: runtime.client.stats.polls >= polls + 2 and runtime.consecutive_failures == 0)
        soc = site.soc()
        assert soc is not None and 0 <= soc <= 100
        assert 0 <= await site.soc_register() <= 100
        assert default_catalog().get(Kind.PROTOCOL, "jbd").source.layer == "builtin"
    journal = read_journal(tmp_path / "state" / "packs")
    assert journal.phase is UpdatePhase.REVERTED
    assert journal.committed is None
    assert _slots(tmp_path / "state") == []


def _add_construct(data: dict[str, Any]) -> None:
    data["requires"]["constructs"] = [*data["requires"]["constructs"], "quantum_checksum"]


def _break_definition(data: dict[str, Any]) -> None:
    data["files"]["modbus/generic.yaml"] = data["files"]["modbus/generic.yaml"].replace("type: u16", "type: u99", 1)


async def test_refused_packs_change_nothing(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "usb")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text()})
    other_hardware = artifacts.build(
        "esp-maps", "1", {"modbus/generic.yaml": generic_map_text()}, hardware='["ESP32*"]'
    )
    needs_construct = artifacts.tamper_manifest(
        artifacts.build("new-engine", "1", {"protocols/jbd.yaml": jbd_text()}), _add_construct
    )
    invalid = artifacts.tamper_manifest(
        artifacts.build("bad-map", "1", {"modbus/generic.yaml": generic_map_text()}), _break_definition
    )
    tampered = maps.model_copy(update={"sha256": "0" * 64})
    cases = [
        (other_hardware, FailureReason.HARDWARE, "ESP32"),
        (needs_construct, FailureReason.ENGINE, "quantum_checksum"),
        (invalid, FailureReason.DEFINITION, "generic.yaml"),
        (tampered, FailureReason.MISMATCH, "sha256"),
    ]
    async with bench(tmp_path / "state") as site:
        before = await site.soc_register()
        for generation, (target, reason, named) in enumerate(cases, start=1):
            site.reports.clear()
            await site.engine.install_local(desired(generation, target), artifacts.directory, site.reports.append)
            failed = site.reports.last
            assert failed.phase is UpdatePhase.FAILED, failed
            assert failed.reason is reason, failed
            assert named in failed.detail
            assert UpdatePhase.ACTIVE_PENDING not in site.reports.phases()
            assert failed.running.pack_names == ()
            assert _slots(tmp_path / "state") == []
            assert abs(await site.soc_register() - before) <= 5
            assert default_catalog().get(Kind.REGISTER_MAP, "generic").source.layer == "builtin"


async def test_a_replayed_older_generation_is_refused_also_after_a_restart(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "usb")
    first = artifacts.build("site-maps", "1", {"modbus/generic.yaml": generic_map_text(soc_scale=0.1)})
    second = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text(soc_scale=0.01)})
    async with bench(tmp_path / "state") as site:
        await site.engine.install_local(desired(5, second), artifacts.directory, site.reports.append)
        assert site.reports.last.phase is UpdatePhase.COMMITTED
        assert site.engine.next_generation == 6
        await site.engine.install_local(desired(4, first), artifacts.directory, site.reports.append)
        replayed = site.reports.last
        assert replayed.phase is UpdatePhase.FAILED
        assert replayed.reason is FailureReason.REPLAY
        assert replayed.generation == 4
        assert replayed.running.pack_names == ("site-maps@2",)
    async with bench(tmp_path / "state") as site:
        await site.engine.install_local(desired(5, first), artifacts.directory, site.reports.append)
        assert site.reports.last.reason is FailureReason.REPLAY, "the same generation with other content"
        # The packs that run now, desired again under a new generation: nothing to do.
        await site.engine.install_local(desired(6, second), artifacts.directory, site.reports.append)
        assert site.reports.last.phase is UpdatePhase.IDLE
        assert site.reports.last.running.pack_names == ("site-maps@2",)
    assert read_journal(tmp_path / "state" / "packs").generation == 6


async def test_an_inverter_change_waits_for_no_alarms_and_fails_after_the_limit(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "usb")
    maps = artifacts.build("site-maps", "1", {"modbus/generic.yaml": generic_map_text()})
    fault = {"fault": "cell_undervoltage", "fault_after": 0.0}
    async with bench(tmp_path / "state", transport=fault, precondition_timeout=1.0) as site:
        await until(lambda: (snapshot := site.gateway.hub.latest("house")) is not None and snapshot.alarms)
        await site.engine.install_local(desired(1, maps), artifacts.directory, site.reports.append)
        assert UpdatePhase.WAITING in site.reports.phases()
        waiting = next(report for report in site.reports if report.phase is UpdatePhase.WAITING)
        assert "alarm" in waiting.detail
        assert site.reports.last.phase is UpdatePhase.FAILED
        assert site.reports.last.reason is FailureReason.PRECONDITION
        assert UpdatePhase.ACTIVE_PENDING not in site.reports.phases()
        assert default_catalog().get(Kind.REGISTER_MAP, "generic").source.layer == "builtin"
    assert _slots(tmp_path / "state") == []


async def test_an_update_interrupted_before_its_switch_resumes_after_a_restart(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "usb")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text(soc_scale=0.1)})
    updates = tmp_path / "state" / "packs"
    # What a kill during the download leaves: the generation accepted, the job in the journal, a partial slot.
    write_journal(
        updates,
        Journal(
            generation=3,
            desired_sha256="ab" * 32,
            desired=desired(3, maps),
            local_dir=str(artifacts.directory),
            phase=UpdatePhase.DOWNLOADING,
        ),
    )
    (updates / "slots" / "3.staging" / "modbus").mkdir(parents=True)
    async with bench(tmp_path / "state") as site:
        await site.engine.resume(site.reports.append)
        assert site.reports.phases()[0] is UpdatePhase.DOWNLOADING
        assert site.reports.last.phase is UpdatePhase.COMMITTED
        assert site.reports.last.generation == 3
        soc = site.soc()
        assert soc is not None
        assert abs(await site.soc_register() - soc * 10) <= 20
    assert _slots(tmp_path / "state") == ["3"]


async def test_a_desired_state_for_another_gateway_is_refused(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "usb")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text()})
    async with bench(tmp_path / "state") as site:
        other = desired(1, maps).model_copy(update={"gateway": "gw-2"})
        await site.engine.install_local(other, artifacts.directory, site.reports.append)
        assert site.reports.last.phase is UpdatePhase.FAILED
        assert "gw-2" in site.reports.last.detail
    assert read_journal(tmp_path / "state" / "packs").generation == 0


async def test_an_empty_pack_set_goes_back_to_the_built_in_definitions(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "usb")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text(soc_scale=0.1)})
    async with bench(tmp_path / "state") as site:
        await site.engine.install_local(desired(1, maps), artifacts.directory, site.reports.append)
        assert site.reports.last.phase is UpdatePhase.COMMITTED
        await site.engine.install_local(desired(2), artifacts.directory, site.reports.append)
        back = site.reports.last
        assert back.phase is UpdatePhase.COMMITTED
        assert back.running.pack_names == ()
        assert await site.soc_register() <= 100, "the built-in map (whole per cent) serves again"
        assert default_catalog().get(Kind.REGISTER_MAP, "generic").source.layer == "builtin"
    assert _slots(tmp_path / "state") == ["1", "2"], "the previous slot is kept until the next commit"


async def test_a_damaged_journal_starts_the_gateway_on_the_built_in_definitions(tmp_path: Path) -> None:
    updates = tmp_path / "state" / "packs"
    updates.mkdir(parents=True)
    (updates / JOURNAL_FILE).write_bytes(b'{"v":1,"generation":')
    async with bench(tmp_path / "state") as site:
        assert default_catalog().get(Kind.REGISTER_MAP, "generic").source.layer == "builtin"
        assert site.engine.journal.generation == 0
        assert await site.soc_register() <= 100
    assert (updates / f"{JOURNAL_FILE}{DAMAGED_SUFFIX}").read_bytes() == b'{"v":1,"generation":'


class _SlowLink(SignedDirectory):
    """A verified repository read as over a slow link: 1 KiB every 0.2 s, with progress (the TUF source's shape)."""

    def download(self, target: str, *, length: int, sha256: str, progress: Progress | None = None) -> Path:
        path = super().download(target, length=length, sha256=sha256)
        for done in range(0, length, 1024):
            time.sleep(0.2)
            if progress is not None:
                progress(done, length)
        return path


async def test_a_long_download_reports_its_progress(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    artifacts = Artifacts(tmp_path / "repository")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text()})
    async with bench(tmp_path / "state", source=_SlowLink(artifacts.directory, key.public_key())) as site:
        await site.engine.take(sign(desired(1, maps), key), site.reports.append)
    downloading = [report.progress for report in site.reports if report.phase is UpdatePhase.DOWNLOADING]
    assert any(p is not None and 0 < p.done < p.total for p in downloading), downloading
    assert site.reports.last.phase is UpdatePhase.COMMITTED
