"""Gateway software on disk: two virtual environments (A/B), a ``current`` symlink, and the restart under systemd.

The layout below a root (``/opt/bmsgate`` by default, see docs/fleet/updates-on-the-gateway.md)::

    venvs/a/            one complete environment (Python, bmsgate and its dependencies)
    venvs/b/            the other one (created on the first software update)
    current -> venvs/a  what the systemd unit starts: ``current/bin/bmsgate run -c /etc/bmsgate/gateway.yaml``
    software-pending    only while a new version has not passed its health check: ``previous=venvs/a``
    software-starts     one line per start of the unit while ``software-pending`` exists

A new version is installed into the idle environment, rebuilt as a copy of the running one so that every
dependency is already there: a gateway may have no package index, so the wheel goes in with ``pip install
--no-index --no-deps`` and ``pip check`` refuses a wheel needing a dependency the copy lacks. The switch is
one atomic rename of a new symlink over ``current``; then the process exits with :data:`RESTART_EXIT_CODE`
and systemd starts the new version.

A version that dies before it can run any code of its own (an import error) cannot revert itself, so the
revert of a crash loop lives outside both environments: the unit's ``ExecStartPre`` guard
(``deploy/bmsgate-guard``) counts starts while ``software-pending`` exists and, at the second start, switches
``current`` back to ``previous`` before systemd starts anything.

The engine's software branch, step by step: download and verify the wheel → install into the idle
environment (``staged``) → journal ``active-pending`` with the previous environment and version → the
guard's marker → switch → exit. The new version's start leaves the pending switch to its engine
(:func:`settle_switch`), whose ``resume`` runs the health check: pass → marker removed, ``committed``
reported by the new version; fail → switched back, journal ``reverted``, exit, and the previous version
reports it. Any start of the previous version with a switch pending records the revert (:func:`settle_switch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bmsgate import __version__
from bmsgate.errors import BmsgateError
from bmsgate.fleet.agent.updates.durable import sync_directory
from bmsgate.fleet.agent.updates.journal import Journal, SoftwareActivation, write_journal
from bmsgate.fleet.updates import FailureReason, UpdatePhase

if TYPE_CHECKING:
    from bmsgate.runtime.supervisor import Supervisor

__all__ = [
    "DEFAULT_ROOT",
    "PENDING_MARKER",
    "RESTART",
    "RESTART_EXIT_CODE",
    "STARTS_FILE",
    "VENVS",
    "RestartRequest",
    "SoftwareError",
    "SoftwareLayout",
    "clone_venv",
    "install_wheel",
    "settle_switch",
    "wheel_version",
]

DEFAULT_ROOT: Final = Path("/opt/bmsgate")
VENVS: Final = ("venvs/a", "venvs/b")
PENDING_MARKER: Final = "software-pending"
STARTS_FILE: Final = "software-starts"
RESTART_EXIT_CODE: Final = 75
"""``bmsgate run``'s exit status after a software switch or revert (EX_TEMPFAIL): "start me again"."""
_OUTPUT_TAIL: Final = 600
_WHEEL_VERSION: Final = re.compile(r"[0-9][0-9A-Za-z.+_]{0,31}")
_LOGGER = logging.getLogger(__name__)
_CURRENT: Final = "current"


class SoftwareError(BmsgateError):
    """The software could not be installed or switched (the running version is untouched)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SoftwareLayout:
    """The A/B environments below `root` (see the module docstring)."""

    root: Path = DEFAULT_ROOT

    @property
    def current(self) -> Path:
        """The symlink the systemd unit starts through."""
        return self.root / _CURRENT

    def active(self) -> str:
        """The environment ``current`` points to (``venvs/a`` or ``venvs/b``).

        Raises:
            SoftwareError: ``current`` is not a symlink to one of the two environments.
        """
        try:
            target = os.readlink(self.current)
        except OSError as exc:
            raise SoftwareError(f"{self.current}: not the A/B layout's symlink ({exc.strerror or exc})") from None
        if target not in VENVS:
            raise SoftwareError(f"{self.current} points to {target!r}, not to one of {', '.join(VENVS)}")
        return target

    def idle(self) -> str:
        """The environment not running (``venvs/b`` while ``current`` is ``venvs/a``)."""
        active = self.active()
        return VENVS[1] if active == VENVS[0] else VENVS[0]

    def runs_this_process(self) -> bool:
        """Whether this interpreter is the one ``current`` points to (otherwise a restart would not switch)."""
        try:
            return Path(sys.prefix).resolve() == self.current.resolve(strict=True)
        except OSError:
            return False

    def switch(self, environment: str) -> None:
        """Point ``current`` at `environment` atomically (a new symlink renamed over the old one).

        Raises:
            SoftwareError: the file system refused.
        """
        temporary = self.root / f".{_CURRENT}.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(environment)
            temporary.replace(self.current)
            sync_directory(self.root)
        except OSError as exc:
            raise SoftwareError(f"cannot point {self.current} at {environment}: {exc.strerror or exc}") from None

    def mark_pending(self, previous: str) -> None:
        """Write the guard's marker (before the switch): a crash loop of the new version returns to `previous`.

        Raises:
            SoftwareError: the file system refused.
        """
        marker = self.root / PENDING_MARKER
        temporary = self.root / f".{PENDING_MARKER}.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                (self.root / STARTS_FILE).unlink()
            temporary.write_text(f"previous={previous}\n", encoding="ascii")
            temporary.replace(marker)
            sync_directory(self.root)
        except OSError as exc:
            raise SoftwareError(f"cannot write {marker}: {exc.strerror or exc}") from None

    def clear_pending(self) -> None:
        """Remove the guard's marker and start count (after a commit, or once reverted)."""
        for name in (PENDING_MARKER, STARTS_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()
        with contextlib.suppress(OSError):
            sync_directory(self.root)

    def starts(self) -> int:
        """How often the guard counted a start since the switch."""
        try:
            return len((self.root / STARTS_FILE).read_text(encoding="ascii").splitlines())
        except OSError:
            return 0


def wheel_version(wheel: Path) -> str:
    """The version in a bmsgate wheel's file name (``bmsgate-<version>-<tags>.whl``).

    Raises:
        SoftwareError: not a bmsgate wheel's name.
    """
    parts = wheel.name.removesuffix(".whl").split("-")
    if (
        not wheel.name.endswith(".whl")
        or len(parts) < 3
        or parts[0] != "bmsgate"
        or not _WHEEL_VERSION.fullmatch(parts[1])
    ):
        raise SoftwareError(f"{wheel.name[:100]!r}: not a bmsgate wheel (bmsgate-<version>-<tags>.whl)")
    return parts[1]


def clone_venv(source: Path, target: Path) -> None:
    """Make `target` a copy of the virtual environment `source`, its scripts pointing at `target`.

    Raises:
        SoftwareError: the file system refused.
    """
    try:
        if target.exists() or target.is_symlink():
            shutil.rmtree(target)
        shutil.copytree(source, target, symlinks=True)
        old, new = str(source).encode(), str(target).encode()
        for script in (target / "bin").iterdir():
            if script.is_symlink() or not script.is_file() or script.stat().st_size > 64 * 1024:
                continue
            data = script.read_bytes()
            if old in data and b"\0" not in data:
                script.write_bytes(data.replace(old, new))
    except OSError as exc:
        raise SoftwareError(f"cannot copy {source} to {target}: {exc.strerror or exc}") from None


def _clean_env() -> dict[str, str]:
    # The new environment must see its own packages only, not a path this process was started with.
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}


def _run(command: list[str], timeout: float, what: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and pip, no shell
            command, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL, env=_clean_env()
        )
    except subprocess.TimeoutExpired:
        raise SoftwareError(f"{what} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise SoftwareError(f"{what} could not start: {exc.strerror or exc}") from None
    output = (done.stdout + done.stderr).decode(errors="replace").strip()
    if done.returncode != 0:
        raise SoftwareError(f"{what} failed (exit {done.returncode}): {output[-_OUTPUT_TAIL:]}")
    return output


def install_wheel(layout: SoftwareLayout, wheel: Path, version: str, *, timeout: float) -> str:
    """Install `wheel` (bmsgate `version`) into the idle environment, rebuilt from the running one.

    Returns:
        The environment installed into (``venvs/a`` or ``venvs/b``); ``current`` is not touched.

    Raises:
        SoftwareError: the layout is not set up, the copy or pip failed or timed out, ``pip check`` found
            a missing dependency, or the environment then reports another version.
    """
    if wheel_version(wheel) != version:
        raise SoftwareError(f"{wheel.name} is not bmsgate {version}")
    active, idle = layout.active(), layout.idle()
    target = layout.root / idle
    clone_venv((layout.root / active).resolve(), target)
    python = str(target / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "install", "--no-index", "--no-deps", "--force-reinstall", str(wheel)], timeout, "pip install")
    _run([*pip, "check"], timeout, "pip check (the dependencies in the new environment)")
    probe = "import importlib.metadata as m; print(m.version('bmsgate'))"
    found = _run([python, "-I", "-c", probe], timeout, "the new environment's version probe").splitlines()
    if not found or found[-1] != version:
        raise SoftwareError(f"{idle} reports bmsgate {found[-1] if found else '?'} after installing {version}")
    return idle


def settle_switch(
    directory: Path, journal: Journal, activation: SoftwareActivation, layout: SoftwareLayout | None
) -> Journal:
    """Settle a pending software switch at start: the new version's first start keeps it (its engine checks).

    Any other start runs the previous version (the guard switched back, or the switch never happened):
    ``current`` is made to point at it and the journal says ``reverted``.
    """
    if __version__ == activation.version and layout is not None and layout.runs_this_process():
        return journal
    starts = 0
    if layout is not None:
        starts = layout.starts()
        try:
            if layout.active() != activation.previous:
                layout.switch(activation.previous)
        except SoftwareError as exc:
            _LOGGER.error("updates: %s", exc)  # noqa: TRY400 - the journal below says what runs
        layout.clear_pending()
    detail = (
        f"software {activation.version} in {activation.target} stopped before its health check passed "
        f"({starts} starts counted); {activation.previous} with {activation.previous_version} runs again"
    )
    _LOGGER.warning("updates: generation %d: %s", journal.generation, detail)
    journal = journal.model_copy(
        update={
            "phase": UpdatePhase.REVERTED,
            "reason": FailureReason.HEALTH,
            "detail": detail,
            "software": None,
            "desired": None,
        }
    )
    write_journal(directory, journal)
    return journal


class RestartRequest:
    """Whether this process should exit with :data:`RESTART_EXIT_CODE` once the gateway stopped."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, supervisor: Supervisor) -> None:
        """Stop the gateway; ``bmsgate run`` then exits so that systemd starts ``current`` again."""
        self.requested = True
        supervisor.request_stop()

    def exit_code(self) -> int:
        """The exit status ``bmsgate run`` returns (0 without a request)."""
        return RESTART_EXIT_CODE if self.requested else 0


RESTART: Final = RestartRequest()
"""The process's one request (``bmsgate run`` reads it after the gateway stopped)."""
