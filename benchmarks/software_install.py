"""What a software update costs on the gateway before its restart: the A/B steps with a real wheel and real venvs.

Figures (median of several runs, seconds):

* wheel build: ``pip wheel --no-deps --no-build-isolation`` of this source tree (done once, on the build host);
* venv create: ``python -m venv`` of the A environment (the installer does this once);
* clone: the idle environment rebuilt as a copy of the running one (``clone_venv``);
* install: the whole :func:`install_wheel` (clone + ``pip install --no-index --no-deps`` + ``pip check`` +
  the version probe), what the gateway does between ``verified`` and ``staged``;
* switch: the pending marker and the atomic symlink switch of ``current``.

The dependencies of the environments come from this interpreter's site-packages through a ``.pth`` file,
as in the tests; on a gateway they are real files in the environment, which makes the clone copy more.

Run: .venv/bin/python benchmarks/software_install.py [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bmsgate.fleet.agent.updates.software import SoftwareLayout, clone_venv, install_wheel

_REPOSITORY = Path(__file__).resolve().parents[1]


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _build(work: Path) -> Path:
    tree = work / "tree"
    shutil.copytree(_REPOSITORY / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(_REPOSITORY / "README.md", tree / "README.md")
    shutil.copy(_REPOSITORY / "pyproject.toml", tree / "pyproject.toml")
    out = work / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out)]
    subprocess.run([*command, str(tree)], check=True, capture_output=True)
    return next(out.glob("bmsgate-*.whl"))


def _one_run(work: Path, wheel: Path, version: str, figures: dict[str, list[float]]) -> None:
    layout = SoftwareLayout(work / "opt")
    venv = layout.root / "venvs" / "a"
    figures["venv create"].append(_timed(lambda: subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)))
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    layout.current.symlink_to("venvs/a")
    figures["clone"].append(_timed(lambda: clone_venv(venv, work / "clone")))
    figures["install"].append(_timed(lambda: install_wheel(layout, wheel, version, timeout=300)))
    started = time.perf_counter()
    layout.mark_pending("venvs/a")
    layout.switch("venvs/b")
    figures["switch"].append(time.perf_counter() - started)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"wheel build": [], "venv create": [], "clone": [], "install": [], "switch": []}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        wheel = _build(work)
        figures["wheel build"].append(_timed(lambda: _build(work / "again")))
        version = wheel.name.split("-")[1]
        size = wheel.stat().st_size
        for run in range(args.runs):
            _one_run(work / f"run-{run}", wheel, version, figures)
    print(f"software A/B on this machine ({args.runs} runs, wheel {size / 1024:.0f} KiB):")
    for name, values in figures.items():
        print(f"  {name:12s} median {statistics.median(values):8.3f} s   max {max(values):8.3f} s")


if __name__ == "__main__":
    main()
