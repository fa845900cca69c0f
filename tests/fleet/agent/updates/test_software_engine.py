"""The engine's software branch in process: refusals that change nothing, and the start-up settling a switch.

The whole A/B path with real wheels and processes is in ``test_software.py``; here the engine runs on the
simulated gateway of the other engine tests, and the refusals come before anything is installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bmsgate import __version__
from bmsgate.fleet.agent.updates.engine import start_committed_slot
from bmsgate.fleet.agent.updates.journal import Journal, SoftwareActivation, read_journal, write_journal
from bmsgate.fleet.agent.updates.software import PENDING_MARKER, SoftwareError, SoftwareLayout, wheel_version
from bmsgate.fleet.updates import DesiredState, FailureReason, SoftwareTarget, UpdatePhase
from tests.fleet.agent.updates.conftest import GATEWAY, bench

_WHEEL = "bmsgate-9.9.9-py3-none-any.whl"


def _software_desired(artifacts: Path) -> DesiredState:
    data = b"not really a wheel: refused before anyone opens it"
    (artifacts / "software").mkdir(parents=True)
    (artifacts / "software" / _WHEEL).write_bytes(data)
    now = time.time()
    target = SoftwareTarget(
        version="9.9.9", target=f"software/{_WHEEL}", length=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    return DesiredState(v=1, gateway=GATEWAY, generation=1, issued_at=now, expires_at=now + 60, software=target)


def _layout(root: Path) -> SoftwareLayout:
    for name in ("venvs/a", "venvs/b"):
        (root / name).mkdir(parents=True)
    layout = SoftwareLayout(root)
    layout.current.symlink_to("venvs/a")
    return layout


async def test_without_the_ab_layout_a_software_version_fails_with_install_and_nothing_changes(tmp_path: Path) -> None:
    async with bench(tmp_path / "state") as site:
        await site.engine.install_local(_software_desired(tmp_path / "usb"), tmp_path / "usb", site.reports.append)
        assert site.reports.phases() == [UpdatePhase.FAILED]
        assert site.reports.last.reason is FailureReason.INSTALL
        assert "no A/B environments" in site.reports.last.detail
        assert site.reports.last.running.software == __version__
        assert site.gateway.supervisor.running


async def test_a_process_not_started_through_current_refuses_the_software_update(tmp_path: Path) -> None:
    layout = _layout(tmp_path / "opt")
    async with bench(tmp_path / "state") as site:
        site.engine.settings = dataclasses.replace(site.engine.settings, software=layout)
        await site.engine.install_local(_software_desired(tmp_path / "usb"), tmp_path / "usb", site.reports.append)
        assert site.reports.last.phase is UpdatePhase.FAILED
        assert site.reports.last.reason is FailureReason.INSTALL
        assert "does not run from" in site.reports.last.detail
    assert layout.active() == "venvs/a", "nothing switched"
    assert not (layout.root / "venvs" / "a" / "bin").exists(), "nothing installed"


def _pending(directory: Path, layout: SoftwareLayout) -> None:
    activation = SoftwareActivation(previous="venvs/a", previous_version=__version__, target="venvs/b", version="9.9.9")
    write_journal(directory, Journal(generation=3, phase=UpdatePhase.ACTIVE_PENDING, software=activation))
    layout.mark_pending("venvs/a")


def test_a_start_on_the_previous_version_with_a_switch_pending_records_the_revert(tmp_path: Path) -> None:
    # A kill -9 between the journal and the symlink: `current` still names venvs/a, which starts.
    layout = _layout(tmp_path / "opt")
    _pending(tmp_path / "packs", layout)
    start_committed_slot(tmp_path / "packs", layout)
    journal = read_journal(tmp_path / "packs")
    assert journal.phase is UpdatePhase.REVERTED
    assert journal.reason is FailureReason.HEALTH
    assert "9.9.9 in venvs/b stopped before its health check passed" in journal.detail
    assert journal.software is None
    assert layout.active() == "venvs/a"
    assert not (layout.root / PENDING_MARKER).exists()


def test_a_start_of_the_old_version_while_current_names_the_new_one_switches_back(tmp_path: Path) -> None:
    layout = _layout(tmp_path / "opt")
    _pending(tmp_path / "packs", layout)
    layout.switch("venvs/b")
    start_committed_slot(tmp_path / "packs", layout)
    assert read_journal(tmp_path / "packs").phase is UpdatePhase.REVERTED
    assert layout.active() == "venvs/a", "never left on a version that did not pass"


@given(name=st.text(max_size=80))
def test_any_wheel_name_is_read_or_refused_with_our_error(name: str) -> None:
    file_name = name.replace("/", "_").replace("\0", "_") or "x"
    try:
        version = wheel_version(Path(file_name))
    except SoftwareError:
        return
    assert version[0].isdigit()
    assert file_name.startswith(f"bmsgate-{version}-")


def test_a_journal_from_a_newer_version_is_read_by_the_previous_one(tmp_path: Path) -> None:
    # After a revert the previous version reads what the newer one wrote last, fields it does not know included.
    write_journal(tmp_path, Journal(generation=4, phase=UpdatePhase.REVERTED, reason=FailureReason.HEALTH))
    path = tmp_path / "journal.json"
    path.write_text(path.read_text(encoding="utf-8")[:-1] + ',"added_in_a_later_version":{"x":1}}', encoding="utf-8")
    journal = read_journal(tmp_path)
    assert (journal.generation, journal.phase) == (4, UpdatePhase.REVERTED)
