"""Energy counters (kWh charged / discharged) integrated from power over time, and their persistence.

Integration is the trapezoid rule between consecutive snapshots; when power changes sign between
two samples the interval is split at the (linearly interpolated) zero crossing, so charge and
discharge energy are attributed correctly. Gaps longer than `max_gap` are not integrated: nothing is
known about the power in between, and guessing would inflate a `total_increasing` counter forever.

The counters (plus the device identity chosen for each battery, so unique ids survive restarts) are
kept in one JSON file, written atomically (temporary file, fsync, rename).

A ``total_increasing`` counter must never be published lower than before, or Home Assistant books a
meter reset. After a crash the counters restart from the file, so only values that are in the file may
be published: :meth:`SinkState.published_energy` is the last *saved* value, not the live one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = ["STATE_FILE_NAME", "EnergyIntegrator", "EnergyTotals", "SinkState", "split_trapezoid"]

_LOGGER = logging.getLogger(__name__)

STATE_FILE_NAME: Final = "homeassistant-state.json"
_STATE_VERSION: Final = 1
_JOULES_PER_KWH: Final = 3_600_000.0


@dataclasses.dataclass(frozen=True, slots=True)
class EnergyTotals:
    """Energy counters of one battery, kWh (both only ever grow)."""

    charged_kwh: float = 0.0
    discharged_kwh: float = 0.0


def split_trapezoid(p0: float, p1: float, dt: float) -> tuple[float, float]:
    """Energy (J) into and out of the pack for a linear power ramp from `p0` to `p1` W over `dt` s.

    Returns:
        ``(charged, discharged)``, both non-negative.
    """
    if dt <= 0:
        return 0.0, 0.0
    if p0 >= 0 and p1 >= 0:
        return (p0 + p1) / 2 * dt, 0.0
    if p0 <= 0 and p1 <= 0:
        return 0.0, -(p0 + p1) / 2 * dt
    # Opposite signs: the ramp crosses zero at t* = dt * p0 / (p0 - p1).
    t_zero = dt * p0 / (p0 - p1)
    first = p0 * t_zero / 2
    second = p1 * (dt - t_zero) / 2
    if p0 > 0:
        return first, -second
    return second, -first


@dataclasses.dataclass(slots=True)
class _Track:
    charged_j: float = 0.0
    discharged_j: float = 0.0
    last_timestamp: float | None = None
    last_power: float | None = None


class EnergyIntegrator:
    """Per-battery energy counters fed with (timestamp, power) samples.

    Args:
        max_gap: default longest interval (s) that is still integrated.
    """

    def __init__(self, *, max_gap: float = 120.0) -> None:
        if max_gap <= 0:
            raise ValueError("max_gap must be positive")
        self.max_gap = max_gap
        self._tracks: dict[str, _Track] = {}

    def add(self, battery_id: str, timestamp: float, power: float | None, *, max_gap: float | None = None) -> None:
        """Feed one sample (Unix time, W positive while charging); repeated or older samples are ignored."""
        track = self._tracks.setdefault(battery_id, _Track())
        if power is None or not math.isfinite(power):
            # No power reading breaks the chain: the next sample starts a new segment.
            track.last_timestamp, track.last_power = timestamp, None
            return
        if track.last_timestamp is not None and timestamp <= track.last_timestamp:
            return
        limit = self.max_gap if max_gap is None else max_gap
        if track.last_timestamp is not None and track.last_power is not None:
            dt = timestamp - track.last_timestamp
            if dt <= limit:
                charged, discharged = split_trapezoid(track.last_power, power, dt)
                track.charged_j += charged
                track.discharged_j += discharged
            else:
                _LOGGER.debug("%s: %.0f s gap not integrated", battery_id, dt)
        track.last_timestamp, track.last_power = timestamp, power

    def totals(self, battery_id: str) -> EnergyTotals | None:
        """Counters of a battery, or None before its first power sample."""
        track = self._tracks.get(battery_id)
        if track is None or (track.last_power is None and track.charged_j == track.discharged_j == 0):
            return None
        return EnergyTotals(track.charged_j / _JOULES_PER_KWH, track.discharged_j / _JOULES_PER_KWH)

    def to_dict(self) -> dict[str, dict[str, float | None]]:
        """JSON form of every counter (restored by :meth:`load`)."""
        return {
            battery_id: {
                "charged_kwh": track.charged_j / _JOULES_PER_KWH,
                "discharged_kwh": track.discharged_j / _JOULES_PER_KWH,
                "last_timestamp": track.last_timestamp,
                "last_power": track.last_power,
            }
            for battery_id, track in self._tracks.items()
        }

    def load(self, data: Mapping[str, Any]) -> None:
        """Restore counters from :meth:`to_dict` output; malformed entries are skipped with a warning."""
        for battery_id, entry in data.items():
            try:
                last_ts = entry.get("last_timestamp")
                last_power = entry.get("last_power")
                self._tracks[str(battery_id)] = _Track(
                    charged_j=max(float(entry["charged_kwh"]), 0.0) * _JOULES_PER_KWH,
                    discharged_j=max(float(entry["discharged_kwh"]), 0.0) * _JOULES_PER_KWH,
                    last_timestamp=None if last_ts is None else float(last_ts),
                    last_power=None if last_power is None else float(last_power),
                )
            except (AttributeError, KeyError, TypeError, ValueError):
                _LOGGER.warning("energy state of %s is malformed; starting from zero", battery_id)


class SinkState:
    """The persistent state of the Home Assistant sink: energy counters and device identities.

    Args:
        path: the JSON file (its directory is created on the first save).
        max_gap: default longest integrated interval, s.
    """

    def __init__(self, path: Path, *, max_gap: float = 120.0) -> None:
        self.path = path
        self.energy = EnergyIntegrator(max_gap=max_gap)
        self.identities: dict[str, str] = {}
        self._saved: dict[str, EnergyTotals] = {}

    def published_energy(self, battery_id: str) -> EnergyTotals | None:
        """The counters that may be published: what a restart would continue from.

        Zero for a battery with no saved counters yet (a restart starts it from zero as well).
        """
        saved = self._saved.get(battery_id)
        if saved is not None:
            return saved
        return None if self.energy.totals(battery_id) is None else EnergyTotals()

    def mark_saved(self, data: Mapping[str, Any]) -> set[str]:
        """Record that `data` (a :meth:`to_dict` result) is on disk; returns the batteries whose counters moved."""
        changed: set[str] = set()
        for battery_id, entry in data.get("energy", {}).items():
            totals = EnergyTotals(entry["charged_kwh"], entry["discharged_kwh"])
            if self._saved.get(battery_id) != totals:
                self._saved[battery_id] = totals
                changed.add(battery_id)
        return changed

    def load(self) -> None:
        """Read the file if it exists; an unreadable file is logged and ignored (counters restart)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            _LOGGER.warning("cannot read %s (%s); energy counters start from zero", self.path, exc)
            return
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
                raise ValueError("unknown version")  # noqa: TRY301 - one handler for all bad content
            self.energy.load(data.get("energy") or {})
            self.identities = {str(k): str(v) for k, v in (data.get("identities") or {}).items()}
            self.mark_saved(self.to_dict())
        except (ValueError, TypeError, AttributeError) as exc:
            _LOGGER.warning("%s is not a valid state file (%s); energy counters start from zero", self.path, exc)

    def to_dict(self) -> dict[str, Any]:
        """The file content."""
        return {"version": _STATE_VERSION, "identities": dict(self.identities), "energy": self.energy.to_dict()}

    def save(self) -> None:
        """Write the file atomically (blocking; call it in a thread from async code)."""
        data = self.to_dict()
        write_json_atomic(self.path, data)
        self.mark_saved(data)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON so that readers (and a crash) only ever see the old or the new complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp_name).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp_name).unlink()
        raise
    with contextlib.suppress(OSError):
        # The rename is only durable once the directory entry is on disk.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
