"""Pack slots on disk: ``<updates dir>/slots/<generation>/``, each one catalog layer holding a whole pack set.

A slot is installed under a temporary name and renamed into place once every item loaded, so a slot
directory that exists is complete. The gateway runs the committed slot's directory as its catalog's pack
layer; the previous slot stays until the next commit, so a revert never needs a download.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from bmsgate.catalog import Catalog
from bmsgate.fleet.agent.updates.durable import sync_directory, sync_tree
from bmsgate.fleet.agent.updates.journal import SlotRecord
from bmsgate.fleet.protocol import PackVersion
from bmsgate.fleet.updates import FailureReason
from bmsgate.packs.bundle import Pack, install_packs, validate_installed
from bmsgate.packs.errors import PackError

__all__ = ["SLOTS_DIR", "SlotStore"]

SLOTS_DIR: Final = "slots"
_STAGING_SUFFIX: Final = ".staging"


class SlotStore:
    """The slot directories below `root` (the updates directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.slots = root / SLOTS_DIR

    def path(self, record: SlotRecord | None) -> Path | None:
        """The directory of a slot (None: no slot, the built-in definitions only)."""
        return None if record is None else self.slots / record.slot

    def catalog(self, record: SlotRecord | None) -> Catalog:
        """The catalog with `record`'s slot as its pack layer."""
        return Catalog(packs_dir=self.path(record))

    def install(self, generation: int, packs: Sequence[Pack], identities: Iterable[tuple[str, str, str]]) -> SlotRecord:
        """Install `packs` into the slot of `generation` and load every item from there.

        Raises:
            PackError: reason ``definition`` (two packs ship the same file, an item fails to load here or
                loads as another identity) or ``internal`` (the file system refused).
        """
        final = self.slots / str(generation)
        staging = self.slots / f"{generation}{_STAGING_SUFFIX}"
        try:
            for leftover in (staging, final):
                if leftover.exists():
                    shutil.rmtree(leftover)  # an earlier attempt at this generation, interrupted
            staging.mkdir(parents=True)
            install_packs(packs, staging)
            items = validate_installed(packs, staging)
            # On disk before the journal can name it committed: an SD card losing power must not leave a
            # committed slot of empty files (the gateway could not start on it).
            sync_tree(staging)
            staging.rename(final)
            sync_directory(self.slots)
        except OSError as exc:
            with contextlib.suppress(OSError):
                shutil.rmtree(staging)
            raise PackError(FailureReason.INTERNAL, f"cannot write the slot: {exc}", source=str(final)) from None
        except PackError:
            with contextlib.suppress(OSError):
                shutil.rmtree(staging)
            raise
        return SlotRecord(
            slot=str(generation),
            packs=tuple(pack.manifest.label for pack in packs),
            identities=tuple(identities),
            items=tuple(
                PackVersion(kind=item.kind, name=item.name, version=item.version, sha256=item.sha256) for item in items
            ),
        )

    def remove(self, record: SlotRecord | None) -> None:
        """Delete a slot that nothing runs or will run."""
        path = self.path(record)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    def keep_only(self, *records: SlotRecord | None) -> None:
        """Delete every slot directory but `records`' (old slots, interrupted stagings)."""
        keep = {record.slot for record in records if record is not None}
        if not self.slots.is_dir():
            return
        for entry in self.slots.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
