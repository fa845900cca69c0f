"""Software A/B on the gateway with real wheels, real virtual environments and real gateway processes.

Wheels of bmsgate are built once per session from this source tree (the version patched in a copy). The
A environment is a real venv with the base wheel installed; its dependencies come from the test
interpreter's site-packages through a ``.pth`` file (offline, like a gateway without an index).

The one stand-in is for systemd itself: :class:`UnitStandIn` runs the unit's ``ExecStartPre`` guard (the
real ``deploy/bmsgate-guard``) and then ``current/bin/bmsgate run -c CONFIG``, and starts both again
whenever the process exits (``Restart=always``); after an exit it kills what is left of the process
group, as systemd's ``KillMode=control-group`` does. Against a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bmsgate.fleet.agent.updates.journal import read_journal
from bmsgate.fleet.agent.updates.software import (
    PENDING_MARKER,
    RESTART_EXIT_CODE,
    SoftwareError,
    SoftwareLayout,
    clone_venv,
    install_wheel,
    wheel_version,
)
from bmsgate.fleet.updates import DesiredState, FailureReason, ReportedState, SoftwareTarget, UpdatePhase
from tests.fleet.agent.conftest import FleetBroker, Recorder
from tests.fleet.agent.updates.conftest import GATEWAY, reports_of

_REPOSITORY = Path(__file__).resolve().parents[4]
_GUARD = _REPOSITORY / "deploy" / "bmsgate-guard"
_FIRST_START = Path(__file__).with_name("software_process.py")
_VOLTAGE_BUG = (
    "protocols/decode.py",
    '    out["battery_id"] = battery_id\n',
    '    if "voltage" in out:\n        out["voltage"] *= 10\n    out["battery_id"] = battery_id\n',
)
"""A decoder bug in a new version (the pack voltage ten times too high): it starts, but fails its health check."""
BASE, GOOD, BROKEN, NEEDY, IMPLAUSIBLE = "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"


def _build_wheel(
    work: Path,
    version: str,
    *,
    broken: bool = False,
    extra_dependency: str | None = None,
    source_edit: tuple[str, str, str] | None = None,
) -> Path:
    tree = work / f"tree-{version}"
    shutil.copytree(
        _REPOSITORY / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    )
    shutil.copy(_REPOSITORY / "README.md", tree / "README.md")
    pyproject = (_REPOSITORY / "pyproject.toml").read_text(encoding="utf-8")
    assert f'version = "{BASE}"' in pyproject
    pyproject = pyproject.replace(f'version = "{BASE}"', f'version = "{version}"', 1)
    if extra_dependency is not None:
        pyproject = pyproject.replace("dependencies = [\n", f'dependencies = [\n    "{extra_dependency}",\n', 1)
    (tree / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    init = tree / "src" / "bmsgate" / "__init__.py"
    text = init.read_text(encoding="utf-8").replace(f'__version__ = "{BASE}"', f'__version__ = "{version}"')
    if broken:
        text += '\nraise RuntimeError("a broken build: bmsgate does not import")\n'
    init.write_text(text, encoding="utf-8")
    if source_edit is not None:
        module, old, new = source_edit
        path = tree / "src" / "bmsgate" / module
        source = path.read_text(encoding="utf-8")
        assert old in source
        path.write_text(source.replace(old, new, 1), encoding="utf-8")
    out = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(tree)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out / f"bmsgate-{version}-py3-none-any.whl"


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("software-wheels")
    return {
        BASE: _build_wheel(work, BASE),
        GOOD: _build_wheel(work, GOOD),
        BROKEN: _build_wheel(work, BROKEN, broken=True),
        NEEDY: _build_wheel(work, NEEDY, extra_dependency="bmsgate-no-such-dependency>=1"),
        IMPLAUSIBLE: _build_wheel(work, IMPLAUSIBLE, source_edit=_VOLTAGE_BUG),
    }


@pytest.fixture(scope="session")
def base_venv(tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]) -> Path:
    venv = tmp_path_factory.mktemp("software-venv") / "template"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "zz-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheels[BASE])]
    subprocess.run(pip, check=True, timeout=120, env=_clean_env())
    return venv


def _clean_env() -> dict[str, str]:
    # The environments must import their own bmsgate, not this source tree.
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}


def _layout(tmp_path: Path, base_venv: Path) -> SoftwareLayout:
    layout = SoftwareLayout(tmp_path / "opt")
    (layout.root / "venvs").mkdir(parents=True)
    clone_venv(base_venv, layout.root / "venvs" / "a")
    layout.current.symlink_to("venvs/a")
    return layout


def _target(artifacts: Path, wheel: Path) -> SoftwareTarget:
    (artifacts / "software").mkdir(parents=True, exist_ok=True)
    data = wheel.read_bytes()
    shutil.copy(wheel, artifacts / "software" / wheel.name)
    version = wheel_version(wheel)
    return SoftwareTarget(
        version=version, target=f"software/{wheel.name}", length=len(data), sha256=hashlib.sha256(data).hexdigest()
    )


def _config(tmp_path: Path, credentials: Path, layout: SoftwareLayout) -> Path:
    config = {
        "name": "software bench",
        "state_dir": str(tmp_path / "state"),
        "batteries": [
            {
                "id": "house",
                "protocol": "jbd",
                "poll_interval": 0.2,
                "stale_after": 5.0,
                "transport": {"type": "simulator", "cells": 16, "initial_soc": 76, "seed": 3},
            }
        ],
        "outputs": {
            "console": {"enabled": False},
            "fleet": {
                "credentials": str(credentials),
                "interval": 1.0,
                "reconnect_max": 1.0,
                "updates": {
                    "health_polls": 5,
                    "health_min_duration": 1.0,
                    "health_timeout": 30.0,
                    "software_root": str(layout.root),
                    "install_timeout": 60.0,
                },
            },
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


class UnitStandIn:
    """The systemd stand-in: guard, then ``current/bin/bmsgate run``, again at every exit (see the module doc)."""

    def __init__(self, layout: SoftwareLayout, config: Path, first_start: list[str]) -> None:
        self.layout = layout
        self.config = config
        self.first_start = first_start
        self.exits: list[int] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**_clean_env(), "BMSGATE_ROOT": str(self.layout.root)}
        subprocess.run(["/bin/sh", str(_GUARD)], check=True, timeout=10, env=env)
        command = self.first_start if not self.exits else []
        if not command:
            command = [str(self.layout.current / "bin" / "bmsgate"), "run", "-c", str(self.config)]
        return subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)

    async def run(self) -> None:
        while not self._stopping:
            self.process = self._start()
            while (code := self.process.poll()) is None:
                await asyncio.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # KillMode=control-group: pip children too
            self.exits.append(code)
            await asyncio.sleep(0.2)  # RestartSec

    def stop(self) -> None:
        self._stopping = True
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.asynccontextmanager
async def _unit(layout: SoftwareLayout, config: Path, first_start: list[str]) -> AsyncIterator[UnitStandIn]:
    unit = UnitStandIn(layout, config, first_start)
    task = asyncio.create_task(unit.run())
    try:
        yield unit
    finally:
        unit.stop()
        await asyncio.wait_for(task, 15)


def _prepare(
    tmp_path: Path, fleet_broker: FleetBroker, base_venv: Path, wheel: Path
) -> tuple[SoftwareLayout, Path, list[str]]:
    layout = _layout(tmp_path, base_venv)
    artifacts = tmp_path / "usb"
    now = time.time()
    wanted = DesiredState(
        v=1,
        gateway=GATEWAY,
        generation=1,
        issued_at=now,
        expires_at=now + 3600,
        software=_target(artifacts, wheel),
    )
    desired_file = tmp_path / "desired.json"
    desired_file.write_text(wanted.model_dump_json(), encoding="utf-8")
    config = _config(tmp_path, fleet_broker.write_credentials(GATEWAY, tmp_path / "credentials.json"), layout)
    python = str(layout.current / "bin" / "python")
    return layout, config, [python, str(_FIRST_START), str(config), str(desired_file), str(artifacts)]


def _final(recorder: Recorder) -> ReportedState | None:
    found = [
        report
        for report in reports_of(recorder.raw)
        if report.phase in (UpdatePhase.COMMITTED, UpdatePhase.REVERTED, UpdatePhase.FAILED)
    ]
    return found[-1] if found else None


def _never_committed_on(reports: list[ReportedState], version: str) -> bool:
    return not any(r.phase is UpdatePhase.COMMITTED and r.running.software == version for r in reports)


@pytest.mark.slow
async def test_a_new_version_is_installed_into_b_switched_to_restarted_and_committed(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path, base_venv: Path, wheels: dict[str, Path]
) -> None:
    layout, config, first = _prepare(tmp_path, fleet_broker, base_venv, wheels[GOOD])
    async with _unit(layout, config, first) as unit:
        await recorder.wait_for(lambda: _final(recorder) is not None, timeout=60)
    final = _final(recorder)
    assert final is not None
    assert final.phase is UpdatePhase.COMMITTED, final.detail
    assert final.running.software == GOOD, "reported by the new version itself"
    reports = reports_of(recorder.raw)
    before = [r for r in reports if r.phase in (UpdatePhase.VERIFIED, UpdatePhase.STAGED)]
    assert before, "the install was reported"
    assert all(r.running.software == BASE for r in before), "the old version reported its own steps"
    assert unit.exits[0] == RESTART_EXIT_CODE, "the switch exits with the restart status"
    assert layout.active() == "venvs/b"
    assert not (layout.root / PENDING_MARKER).exists()
    assert read_journal(tmp_path / "state" / "packs").phase is UpdatePhase.COMMITTED
    assert _never_committed_on(reports, BASE)


@pytest.mark.slow
async def test_a_version_that_does_not_start_is_switched_back_and_the_old_one_reports_reverted(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path, base_venv: Path, wheels: dict[str, Path]
) -> None:
    layout, config, first = _prepare(tmp_path, fleet_broker, base_venv, wheels[BROKEN])
    async with _unit(layout, config, first) as unit:
        await recorder.wait_for(lambda: _final(recorder) is not None, timeout=60)
    final = _final(recorder)
    assert final is not None
    assert final.phase is UpdatePhase.REVERTED, final.detail
    assert final.reason is FailureReason.HEALTH
    assert final.running.software == BASE, "reported by the version that runs again"
    assert BROKEN in final.detail
    assert "venvs/a" in final.detail
    assert unit.exits[:2] == [RESTART_EXIT_CODE, 1], "switched, then the broken version died at import"
    assert layout.active() == "venvs/a"
    assert not (layout.root / PENDING_MARKER).exists()
    assert _never_committed_on(reports_of(recorder.raw), BROKEN)


@pytest.mark.slow
async def test_a_version_failing_its_health_check_switches_back_and_the_old_one_reports_reverted(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path, base_venv: Path, wheels: dict[str, Path]
) -> None:
    layout, config, first = _prepare(tmp_path, fleet_broker, base_venv, wheels[IMPLAUSIBLE])
    async with _unit(layout, config, first) as unit:
        await recorder.wait_for(lambda: _final(recorder) is not None, timeout=60)
    final = _final(recorder)
    assert final is not None
    assert final.phase is UpdatePhase.REVERTED, final.detail
    assert final.reason is FailureReason.HEALTH
    assert final.running.software == BASE, "reported by the version that runs again"
    assert "house" in final.detail
    assert "voltage" in final.detail, "the health check's finding"
    assert unit.exits[:2] == [RESTART_EXIT_CODE, RESTART_EXIT_CODE], "switched, then switched back by itself"
    # The new version may die before its agent connects: what it reported, if anything, names itself.
    checking = [r for r in reports_of(recorder.raw) if "health check running" in r.detail]
    assert all(r.running.software == IMPLAUSIBLE for r in checking)
    assert layout.active() == "venvs/a"
    assert _never_committed_on(reports_of(recorder.raw), IMPLAUSIBLE)


@pytest.mark.slow
async def test_killed_during_the_install_the_old_version_runs_says_so_and_finishes_the_update(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path, base_venv: Path, wheels: dict[str, Path]
) -> None:
    layout, config, first = _prepare(tmp_path, fleet_broker, base_venv, wheels[GOOD])
    async with _unit(layout, config, first) as unit:
        await recorder.wait_for(
            lambda: any(r.phase is UpdatePhase.VERIFIED for r in reports_of(recorder.raw)), timeout=30
        )
        assert unit.process is not None
        unit.process.send_signal(signal.SIGKILL)  # while pip installs into venvs/b
        seen = len(reports_of(recorder.raw))
        await recorder.wait_for(lambda: _final(recorder) is not None, timeout=60)
    assert unit.exits[0] == -signal.SIGKILL
    before_kill = reports_of(recorder.raw)[:seen]
    assert UpdatePhase.STAGED not in [r.phase for r in before_kill], "killed before the install finished"
    after = reports_of(recorder.raw)[seen:]
    switch = next(i for i, r in enumerate(after) if r.phase is UpdatePhase.ACTIVE_PENDING)
    resumed = after[: switch + 1]
    assert UpdatePhase.STAGED in [r.phase for r in resumed], "the restarted old version installed again"
    assert all(r.running.software == BASE for r in resumed), "until the switch, the old version runs and says so"
    assert all(r.running.software == GOOD for r in after[switch + 1 :]), "then the new one, saying so"
    final = _final(recorder)
    assert final is not None
    assert final.phase is UpdatePhase.COMMITTED, final.detail
    assert final.running.software == GOOD
    assert layout.active() == "venvs/b"


@pytest.mark.slow  # the session's wheels and venv take ~15 s to build
def test_a_wheel_needing_a_missing_dependency_is_refused_and_nothing_switched(
    tmp_path: Path, base_venv: Path, wheels: dict[str, Path]
) -> None:
    layout = _layout(tmp_path, base_venv)
    with pytest.raises(SoftwareError, match=r"pip check.*bmsgate-no-such-dependency"):
        install_wheel(layout, wheels[NEEDY], NEEDY, timeout=60)
    assert layout.active() == "venvs/a"


def test_the_guard_switches_back_at_the_second_start_without_a_commit(tmp_path: Path) -> None:
    layout = SoftwareLayout(tmp_path)
    for name in ("venvs/a", "venvs/b"):
        (tmp_path / name).mkdir(parents=True)
    layout.current.symlink_to("venvs/a")
    layout.mark_pending("venvs/a")
    layout.switch("venvs/b")
    env = {**os.environ, "BMSGATE_ROOT": str(tmp_path)}
    subprocess.run(["/bin/sh", str(_GUARD)], check=True, env=env)
    assert (layout.active(), layout.starts()) == ("venvs/b", 1), "the first start of the new version"
    subprocess.run(["/bin/sh", str(_GUARD)], check=True, env=env, capture_output=True)
    assert (layout.active(), layout.starts()) == ("venvs/a", 2), "it died: the previous one starts"
    layout.clear_pending()
    subprocess.run(["/bin/sh", str(_GUARD)], check=True, env=env)
    assert (layout.active(), layout.starts()) == ("venvs/a", 0), "without a pending switch the guard does nothing"


def test_a_layout_without_the_symlink_is_refused_by_name(tmp_path: Path) -> None:
    layout = SoftwareLayout(tmp_path)
    with pytest.raises(SoftwareError, match="not the A/B layout"):
        layout.idle()
    (tmp_path / "elsewhere").mkdir()
    layout.current.symlink_to("elsewhere")
    with pytest.raises(SoftwareError, match="not to one of venvs/a, venvs/b"):
        layout.active()
    with pytest.raises(SoftwareError, match="not a bmsgate wheel"):
        wheel_version(Path("other-1.0.tar.gz"))


@pytest.mark.slow
def test_the_install_script_sets_up_the_layout_offline_and_again_harmlessly(
    tmp_path: Path, base_venv: Path, wheels: dict[str, Path]
) -> None:
    # venvs/a exists already with its dependencies (as after a first run with an index): the script installs
    # the wheel offline, makes `current` and the guard; systemd and the user are left out here.
    root = tmp_path / "opt"
    (root / "venvs").mkdir(parents=True)
    clone_venv(base_venv, root / "venvs" / "a")
    env = {**_clean_env(), "BMSGATE_ROOT": str(root), "BMSGATE_NO_SYSTEM": "1", "PIP_NO_INDEX": "1"}
    script = [str(_REPOSITORY / "deploy" / "install.sh"), str(wheels[GOOD]), "mqtt"]
    for _ in range(2):
        subprocess.run(["/bin/sh", *script], check=True, env=env, capture_output=True, timeout=120)
    layout = SoftwareLayout(root)
    assert layout.active() == "venvs/a"
    assert (root / "bin" / "bmsgate-guard").stat().st_mode & 0o111
    probe = [str(layout.current / "bin" / "python"), "-c", "import bmsgate; print(bmsgate.__version__)"]
    assert subprocess.run(probe, check=True, env=env, capture_output=True, text=True).stdout.strip() == GOOD
    help_text = subprocess.run(
        [str(layout.current / "bin" / "bmsgate"), "run", "--help"], check=True, env=env, capture_output=True, text=True
    ).stdout
    assert "--config" in help_text or "-c" in help_text
