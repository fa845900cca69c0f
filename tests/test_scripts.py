"""The set-up scripts (scripts/_bootstrap.sh), with a fake apt-get that records how it was called."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).parents[1] / "scripts" / "_bootstrap.sh"


@pytest.fixture
def fake_apt(tmp_path: Path) -> Path:
    """A bin directory whose apt-get and sudo only log their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_apt_get_waits_for_the_dpkg_lock_instead_of_failing(fake_apt: Path) -> None:
    script = f'source "{BOOTSTRAP}"; apt_install_missing bmsgate-absent-package:bmsgate-absent-command'
    environment = {**os.environ, "PATH": f"{fake_apt}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=environment, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    calls = (fake_apt.parent / "apt.log").read_text().splitlines()
    assert len(calls) == 2
    update, install = calls
    assert update.startswith("-o DPkg::Lock::Timeout=300 update")
    assert install.startswith("-o DPkg::Lock::Timeout=300 install")
    assert install.endswith("bmsgate-absent-package")
    assert "waits up to 300 s" in result.stderr
