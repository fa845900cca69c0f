"""The update journal: one small JSON file saying where the gateway's update stands, written atomically.

It is what makes a restart (or a kill -9) at any step land in a defined state. Every change is written
to a temporary file, flushed to disk, renamed over the journal and the directory flushed, so a reader
finds either the old record or the new one, never a mix. The order of writes is the contract:

* the accepted ``generation`` is written before any work on it (a replayed older desired state is refused
  across restarts);
* ``active-pending`` with the new slot as ``pending`` is written *before* the gateway switches to it, so a
  restart during the health check knows to start on ``committed`` (the previous slot);
* ``committed`` names the new slot only once the health check passed;
* ``active-pending`` with ``software`` (the previous environment and version) is written *before* the
  ``current`` symlink is switched to a new software version.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bmsgate.errors import BmsgateError
from bmsgate.fleet.agent.updates.durable import sync_directory
from bmsgate.fleet.protocol import PackVersion
from bmsgate.fleet.updates import DesiredState, FailureReason, UpdatePhase

__all__ = [
    "DAMAGED_SUFFIX",
    "JOURNAL_FILE",
    "Journal",
    "JournalError",
    "SlotRecord",
    "SoftwareActivation",
    "read_journal",
    "recover_journal",
    "write_journal",
]

JOURNAL_FILE: Final = "journal.json"
DAMAGED_SUFFIX: Final = ".damaged"
_LOGGER = logging.getLogger(__name__)
_MAX_BYTES: Final = 1024 * 1024
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class JournalError(BmsgateError):
    """The journal cannot be read or written."""


class SlotRecord(BaseModel):
    """One installed slot: its directory name under ``slots/`` and what it holds."""

    model_config = _STRICT

    slot: Annotated[str, Field(pattern=r"^[0-9]{1,19}$")]
    packs: tuple[str, ...] = ()
    """``name@version`` of each pack."""
    identities: tuple[tuple[str, str, str], ...] = ()
    """(pack, version, sha256 of the pack file): what a desired state is compared with."""
    items: tuple[PackVersion, ...] = ()


class SoftwareActivation(BaseModel):
    """A software switch waiting for its health check: which environment and version to return to."""

    model_config = _STRICT

    previous: str
    """The environment that ran before (``venvs/a``)."""
    previous_version: str
    target: str
    """The environment switched to."""
    version: str
    """The version installed there."""


class Journal(BaseModel):
    """The whole record (see the module docstring).

    Top-level fields it does not know are ignored: after a software revert the previous version reads the
    journal the newer one wrote last, and must not take it for damaged (that would forget the committed slot).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    v: Literal[1] = 1
    generation: Annotated[int, Field(ge=0)] = 0
    """The last desired generation accepted (0: none yet)."""
    desired_sha256: str | None = None
    rollout: str | None = None
    desired: DesiredState | None = None
    """The desired state being worked on (kept so a restart can resume it)."""
    local_dir: str | None = None
    """Where a locally installed desired state's pack files are (None: from the signed repository)."""
    phase: UpdatePhase = UpdatePhase.IDLE
    reason: FailureReason | None = None
    detail: str = ""
    committed: SlotRecord | None = None
    """The slot the gateway starts with (None: the built-in definitions only)."""
    pending: SlotRecord | None = None
    """The slot being staged or checked (never started with)."""
    software: SoftwareActivation | None = None
    """Set with ``active-pending`` before a software switch; cleared by its commit or revert."""


def read_journal(directory: Path) -> Journal:
    """The journal in `directory` (a fresh one if there is none).

    Raises:
        JournalError: unreadable or not a journal (the gateway then refuses to guess what it runs).
    """
    path = directory / JOURNAL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Journal()
    except OSError as exc:
        raise JournalError(f"{path}: cannot read the update journal: {exc.strerror or exc}") from None
    if len(data) > _MAX_BYTES:
        raise JournalError(f"{path}: {len(data)} bytes, at most {_MAX_BYTES}")
    try:
        return Journal.model_validate_json(data)
    except ValidationError as exc:
        raise JournalError(f"{path}: not an update journal: {exc.errors()[0]['msg']}") from None


def write_journal(directory: Path, journal: Journal) -> None:
    """Replace the journal atomically (temporary file, fsync, rename, fsync of the directory).

    Raises:
        JournalError: the file system refused.
    """
    path = directory / JOURNAL_FILE
    temporary = directory / f".{JOURNAL_FILE}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as file:
            file.write(journal.model_dump_json().encode())
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
        sync_directory(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise JournalError(f"{path}: cannot write the update journal: {exc.strerror or exc}") from None


def recover_journal(directory: Path) -> Journal:
    """The journal, or a fresh one when it is damaged (the damaged file is kept beside it for a look).

    A gateway must start even then: it starts with the built-in definitions only (a defined state) and
    forgets the generations it accepted (the desired state's own signature and expiry still guard it).
    """
    try:
        return read_journal(directory)
    except JournalError as exc:
        _LOGGER.error("updates: %s; starting with the built-in definitions", exc)  # noqa: TRY400 - no traceback
        with contextlib.suppress(OSError):
            (directory / JOURNAL_FILE).replace(directory / f"{JOURNAL_FILE}{DAMAGED_SUFFIX}")
        return Journal()
