"""Whether this gateway can run a pack: hardware and engine, decided from the manifest before anything is written."""

from __future__ import annotations

import fnmatch

from bmsgate.fleet.updates import FailureReason
from bmsgate.packs.bundle import PackManifest
from bmsgate.packs.errors import PackError
from bmsgate.protocols.constructs import CONSTRUCTS, ENGINE_VERSION

__all__ = ["check_compatible", "fits_hardware"]


def fits_hardware(manifest: PackManifest, hardware: str) -> bool:
    """Whether one of the manifest's patterns matches the board model (case-insensitive shell pattern)."""
    model = hardware.casefold()
    return any(fnmatch.fnmatchcase(model, pattern.casefold()) for pattern in manifest.hardware)


def check_compatible(manifest: PackManifest, *, hardware: str, engine: int = ENGINE_VERSION) -> None:
    """Refuse a pack this gateway cannot run.

    The constructs decide, not the level alone: an engine of a higher level runs every construct of the lower
    ones, but a construct missing here (an older engine, or a build with a construct removed) is named.

    Raises:
        PackError: reason ``hardware`` (no pattern matches `hardware`) or ``engine`` (a newer engine level
            with constructs this one lacks, named).
    """
    if not fits_hardware(manifest, hardware):
        raise PackError(
            FailureReason.HARDWARE,
            f"made for {', '.join(manifest.hardware)}; this gateway is {hardware!r}",
            source=manifest.label,
        )
    missing = sorted(set(manifest.requires.constructs) - set(CONSTRUCTS))
    if missing:
        raise PackError(
            FailureReason.ENGINE,
            f"needs engine constructs this gateway (protocol engine {engine}) lacks: {', '.join(missing)}"
            f" (the pack was built by engine {manifest.requires.engine})",
            source=manifest.label,
        )
