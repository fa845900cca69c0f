"""What the gateway is, for its retained state: hardware model and the data files it runs.

Pack versions are the catalog's items (each with the sha256 of its canonical form): what a rollout
compares. The hardware model comes from the device tree on single-board computers (a Raspberry Pi says
``Raspberry Pi Zero 2 W Rev 1.0``), else from the platform.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Final

from bmsgate.catalog import default_catalog
from bmsgate.errors import DefinitionError
from bmsgate.fleet.protocol import PackVersion
from bmsgate.fleet.updates import MAX_DESIRED_PACKS

__all__ = ["hardware_model", "pack_versions", "state_packs"]

_LOGGER = logging.getLogger(__name__)
_DEVICE_TREE_MODEL: Final = Path("/proc/device-tree/model")
_MAX_PACKS: Final = 255
"""The state's pack list holds 256 entries: the data files, plus the software itself."""


def hardware_model(device_tree: Path = _DEVICE_TREE_MODEL) -> str:
    """The board's model name, else ``<system> <machine>`` (e.g. ``Linux x86_64``)."""
    try:
        model = device_tree.read_bytes()[:256].rstrip(b"\0").decode("utf-8", errors="replace").strip()
    except OSError:
        model = ""
    if model:
        return model
    return f"{platform.system()} {platform.machine()}".strip() or "unknown"


def pack_versions() -> list[PackVersion]:
    """Every data file the catalog resolves to, with its identity (sha256 of the canonical form)."""
    try:
        items = default_catalog().items()
    except DefinitionError as exc:
        _LOGGER.warning("catalog: %s; reporting no pack versions", exc)
        return []
    packs = [
        PackVersion(kind=item.kind.value, name=item.name, version=item.version, sha256=item.sha256) for item in items
    ]
    if len(packs) > _MAX_PACKS:
        _LOGGER.warning("%d data files; the state reports the first %d", len(packs), _MAX_PACKS)
    return packs[:_MAX_PACKS]


def state_packs(updates: object = None) -> list[PackVersion]:
    """The retained state's list: the installed packs (kind ``pack``) first, then every data file that runs.

    Args:
        updates: the gateway's update engine (its ``active_packs()`` names the installed packs), if any.
    """
    active = getattr(updates, "active_packs", None)
    installed: list[PackVersion] = list(active())[:MAX_DESIRED_PACKS] if callable(active) else []
    return [*installed, *pack_versions()][: _MAX_PACKS + 1]
