"""The alarm rules, pure: thresholds with hysteresis, BMS alarms, geofence and "no data" decisions.

Each rule looks at one value and whether its alarm is active now, and answers open, close or nothing. An
alarm opens at its open threshold and closes only at its separate close threshold, so a value hovering
near one limit does not flap.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bmsgate.fleet.server.store.repository import Severity
from bmsgate.model import Alarm

__all__ = [
    "BMS_PREFIX",
    "AlarmSettings",
    "Decision",
    "Kind",
    "ThresholdRule",
    "bms_kind",
    "bms_severity",
    "distance_m",
    "threshold_rules",
]

BMS_PREFIX: Final = "bms:"
_EARTH_RADIUS_M: Final = 6_371_008.8
_IGNORED_BMS: Final = frozenset({Alarm.BATTERY_FULL})
"""Reported as alarms by some BMSes but not a problem."""


class Kind(enum.StrEnum):
    """The server's own alarm kinds (BMS alarms are ``bms:<alarm name>``)."""

    NO_DATA = "no_data"
    LOW_SOC = "low_soc"
    CELL_DRIFT = "cell_drift"
    HIGH_TEMPERATURE = "high_temperature"
    LOW_TEMPERATURE = "low_temperature"
    GEOFENCE = "geofence"
    GPS_LOST = "gps_lost"


class Decision(enum.Enum):
    """What a rule says."""

    OPEN = "open"
    CLOSE = "close"
    KEEP = "keep"


class AlarmSettings(BaseModel):
    """Every alarm threshold (each with its own close threshold), as a ``[fleet.alarms]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    no_data_factor: float = Field(default=3.0, ge=1.0)
    """"No data" opens after this many telemetry intervals of silence."""
    no_data_min_s: float = Field(default=60.0, ge=0)
    """…and never sooner than this."""
    low_soc_open: float = 20.0
    low_soc_close: float = 25.0
    drift_open_v: float = Field(default=0.10, gt=0)
    """Cell voltage delta (max − min) that opens a drift alarm, V."""
    drift_close_v: float = Field(default=0.05, gt=0)
    high_temperature_open: float = 50.0
    high_temperature_close: float = 45.0
    low_temperature_open: float = 0.0
    low_temperature_close: float = 3.0
    geofence_radius_m: float = Field(default=1000.0, gt=0)
    """A site farther than this from its home position opens a geofence alarm."""
    geofence_close_fraction: float = Field(default=0.8, gt=0, le=1)
    """It closes once back within this fraction of the radius."""
    location_stale_s: float = Field(default=3600.0, gt=0)
    """A measured (not configured) location older than this counts as GPS lost."""
    bms_alarms: bool = True
    """Open an alarm for each BMS alarm and protection."""
    check_interval_s: float = Field(default=10.0, gt=0)
    """How often the silent-gateway and stale-location checks run."""
    queue_limit: int = Field(default=1000, ge=1)
    """Batches waiting for the alarm engine; beyond it the oldest is dropped (and counted)."""

    @model_validator(mode="after")
    def _check_hysteresis(self) -> Self:
        pairs = (
            ("low_soc", self.low_soc_close >= self.low_soc_open),
            ("drift", self.drift_close_v <= self.drift_open_v),
            ("high_temperature", self.high_temperature_close <= self.high_temperature_open),
            ("low_temperature", self.low_temperature_close >= self.low_temperature_open),
        )
        wrong = [name for name, ok in pairs if not ok]
        if wrong:
            raise ValueError(f"close threshold on the wrong side of the open threshold: {', '.join(wrong)}")
        return self


@dataclasses.dataclass(frozen=True, slots=True)
class ThresholdRule:
    """One value against an open and a close threshold; ``above``: the alarm is for high values."""

    kind: Kind
    open_at: float
    close_at: float
    above: bool
    severity: Severity
    unit: str

    def decide(self, value: float | None, active: bool) -> Decision:
        """Open, close or keep for `value` (None: not reported, keep)."""
        if value is None or math.isnan(value):
            return Decision.KEEP
        if self.above:
            if not active and value >= self.open_at:
                return Decision.OPEN
            if active and value <= self.close_at:
                return Decision.CLOSE
        else:
            if not active and value <= self.open_at:
                return Decision.OPEN
            if active and value >= self.close_at:
                return Decision.CLOSE
        return Decision.KEEP

    def message(self, value: float) -> str:
        """The alarm's text."""
        side = "above" if self.above else "below"
        return f"{self.kind.value.replace('_', ' ')}: {value:.3g} {self.unit} ({side} {self.open_at:g} {self.unit})"


def threshold_rules(settings: AlarmSettings) -> tuple[tuple[ThresholdRule, str], ...]:
    """Each threshold rule with the snapshot JSON key it reads."""
    return (
        (
            ThresholdRule(Kind.LOW_SOC, settings.low_soc_open, settings.low_soc_close, False, Severity.WARNING, "%"),
            "soc",
        ),
        (
            ThresholdRule(Kind.CELL_DRIFT, settings.drift_open_v, settings.drift_close_v, True, Severity.WARNING, "V"),
            "cell_delta",
        ),
        (
            ThresholdRule(
                Kind.HIGH_TEMPERATURE,
                settings.high_temperature_open,
                settings.high_temperature_close,
                True,
                Severity.CRITICAL,
                "°C",
            ),
            "temperature_max",
        ),
        (
            ThresholdRule(
                Kind.LOW_TEMPERATURE,
                settings.low_temperature_open,
                settings.low_temperature_close,
                False,
                Severity.WARNING,
                "°C",
            ),
            "temperature_min",
        ),
    )


def bms_kind(alarm: str) -> str | None:
    """The alarm kind of a BMS alarm name; None for a name that is not an alarm worth raising."""
    try:
        known = Alarm(alarm)
    except ValueError:
        return BMS_PREFIX + alarm if alarm else None
    if known in _IGNORED_BMS:
        return None
    return BMS_PREFIX + known.value


def bms_severity(kind: str) -> Severity:
    """Protections are critical, the informational BMS alarms a warning."""
    try:
        alarm = Alarm(kind.removeprefix(BMS_PREFIX))
    except ValueError:
        return Severity.WARNING
    return Severity.CRITICAL if alarm.is_protection else Severity.WARNING


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points in metres (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
