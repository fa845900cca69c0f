"""What every inverter output shares about freshness: keep → safe → silent, and charge requests (pure).

The CAN and RS485 outputs both go through the same phases (docs/inverters.md): fresh data is sent as it
is; data past the freshness budget turns into the safe answer (zero limits, enable bits clear, error
flags); past the second, longer budget the output says nothing so the inverter's own comms-loss
fallback engages. Time is passed in; each machine logs its own state changes once (WARNING when things
get worse, INFO when they recover).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math

from bmsgate.inverter.bank import BankState

__all__ = ["ForceChargeRequest", "OutputPhase", "PhaseTracker", "Requests"]

_LOGGER = logging.getLogger(__name__)


class OutputPhase(enum.StrEnum):
    """What an inverter output does with the data it has (the stale-data state machine)."""

    WAITING = "waiting"
    """No pack has reported yet: silent (there is nothing true to say)."""
    NORMAL = "normal"
    """Fresh data: the full frame set / normal replies with the limit engine's values."""
    SAFE = "safe"
    """Data past the freshness budget: zero current limits, enable bits clear, error flags set."""
    SILENT = "silent"
    """Data past the second, longer budget: nothing is sent so the inverter falls back on its own."""

    @property
    def transmits(self) -> bool:
        """Whether frames go on the bus in this phase."""
        return self in {OutputPhase.NORMAL, OutputPhase.SAFE}


@dataclasses.dataclass(frozen=True, slots=True)
class Requests:
    """Request flags the sink's small state machines decide (0x35C bits 5/4/3)."""

    force_charge_1: bool = False
    force_charge_2: bool = False
    full_charge: bool = False


class PhaseTracker:
    """keep (normal) → safe → silent, from the bank's freshness; the order is guaranteed.

    The bank is stale when no pack is fresh (the hub's budget, or the CAN output's tighter
    ``safe_after``); that switches to the safe frame set. Data older than `silent_after` counts as
    stale whatever the budgets say, so the safe phase starts at the latest there. The output goes quiet
    (so the inverter falls back on its own) once the newest data is older than `silent_after` **and** the
    safe frame set has been sent for `safe_hold` seconds: silence never follows fresh data directly, and
    the inverter always hears zero limits and error flags first, whatever the budgets.

    Args:
        silent_after: seconds since the newest pack data after which nothing is sent.
        safe_hold: seconds the safe phase lasts at least before silence (a few frame periods).
        label: names the output in log lines.
    """

    def __init__(self, silent_after: float, safe_hold: float = 3.0, *, label: str = "CAN output") -> None:
        if not (math.isfinite(silent_after) and silent_after > 0):
            raise ValueError("silent_after must be positive and finite")
        if not (math.isfinite(safe_hold) and safe_hold > 0):
            raise ValueError("safe_hold must be positive and finite")
        self.silent_after = silent_after
        self.safe_hold = safe_hold
        self.label = label
        self._phase = OutputPhase.WAITING
        self._safe_since: float | None = None

    @property
    def phase(self) -> OutputPhase:
        """The current phase."""
        return self._phase

    def update(self, bank: BankState, data_age: float | None, *, now: float) -> OutputPhase:
        """The phase for `bank`, whose newest pack data is `data_age` seconds old (None: never seen).

        Args:
            bank: the aggregated bank.
            data_age: seconds since the newest data of any bank pack (None: never seen).
            now: monotonic time (measures how long the safe phase has lasted).
        """
        too_old = data_age is not None and data_age > self.silent_after
        if not (bank.stale or too_old):
            phase = OutputPhase.NORMAL
        elif not bank.ever_seen or data_age is None:
            phase = OutputPhase.WAITING
        elif self._phase is OutputPhase.SILENT:
            phase = OutputPhase.SILENT
        else:
            if self._phase is not OutputPhase.SAFE or self._safe_since is None:
                self._safe_since = now
            held = now - self._safe_since >= self.safe_hold
            phase = OutputPhase.SILENT if too_old and held else OutputPhase.SAFE
        if phase is not OutputPhase.SAFE and phase is not OutputPhase.SILENT:
            self._safe_since = None
        self._log(phase, data_age)
        self._phase = phase
        return phase

    def _log(self, phase: OutputPhase, data_age: float | None) -> None:
        if phase is self._phase:
            return
        if phase is OutputPhase.NORMAL:
            _LOGGER.info("%s: fresh data, sending live values", self.label)
        elif phase is OutputPhase.SAFE:
            _LOGGER.warning(
                "%s: bank data is stale (%.0f s old): sending safe values (zero limits, error flags)",
                self.label,
                data_age or 0.0,
            )
        elif phase is OutputPhase.SILENT:
            _LOGGER.warning(
                "%s: no bank data for %.0f s: stopped transmitting so the inverter falls back",
                self.label,
                data_age or 0.0,
            )
        else:
            _LOGGER.info("%s: waiting for the first battery data", self.label)


class ForceChargeRequest:
    """Force-charge request levels with hysteresis (0x35C bits 5 and 4).

    Level I is requested at or below `soc_1` (or with an under-voltage protection active), level II at
    or below `soc_2`; each clears once SoC is `hysteresis` above its threshold.

    Args:
        soc_1: % at or below which "force charge I" is requested.
        soc_2: % at or below which "force charge II" is requested.
        hysteresis: % above the threshold before a request clears.
    """

    def __init__(self, soc_1: float, soc_2: float, hysteresis: float) -> None:
        self.soc_1, self.soc_2, self.hysteresis = soc_1, soc_2, hysteresis
        self._level_1 = False
        self._level_2 = False

    def update(self, soc: float | None, *, under_voltage: bool) -> Requests:
        """The request flags for the bank's SoC (None: unknown, requests clear)."""
        if soc is None:
            self._level_1 = self._level_2 = False
        else:
            self._level_1 = soc <= self.soc_1 or (self._level_1 and soc < self.soc_1 + self.hysteresis)
            self._level_2 = soc <= self.soc_2 or (self._level_2 and soc < self.soc_2 + self.hysteresis)
        return Requests(force_charge_1=self._level_1 or under_voltage, force_charge_2=self._level_2)
