"""The CAN output's small state machines: data freshness phase, inverter liveness, charge requests (pure).

Time is passed in; each logs its own state changes once (WARNING when things get worse, INFO when
they recover).
"""

from __future__ import annotations

import logging

from bmsgate.bank import BankState
from bmsgate.sinks.can.profiles import OutputPhase, Requests

__all__ = ["ForceChargeRequest", "PhaseTracker"]

_LOGGER = logging.getLogger(__name__)


class PhaseTracker:
    """keep (normal) → safe → silent, from the bank's freshness.

    The bank is stale when no pack is fresh (the hub's budget, or the CAN output's tighter
    ``safe_after``); that alone switches to the safe frame set. Once the newest data is older than
    `silent_after`, the output goes quiet so the inverter falls back on its own.

    Args:
        silent_after: seconds since the newest pack data after which nothing is sent.
    """

    def __init__(self, silent_after: float) -> None:
        if silent_after <= 0:
            raise ValueError("silent_after must be positive")
        self.silent_after = silent_after
        self._phase = OutputPhase.WAITING

    @property
    def phase(self) -> OutputPhase:
        """The current phase."""
        return self._phase

    def update(self, bank: BankState, data_age: float | None) -> OutputPhase:
        """The phase for `bank`, whose newest pack data is `data_age` seconds old (None: never seen)."""
        if not bank.stale:
            phase = OutputPhase.NORMAL
        elif not bank.ever_seen or data_age is None:
            phase = OutputPhase.WAITING
        elif data_age > self.silent_after:
            phase = OutputPhase.SILENT
        else:
            phase = OutputPhase.SAFE
        self._log(phase, data_age)
        self._phase = phase
        return phase

    def _log(self, phase: OutputPhase, data_age: float | None) -> None:
        if phase is self._phase:
            return
        if phase is OutputPhase.NORMAL:
            _LOGGER.info("CAN output: fresh data, sending the full frame set")
        elif phase is OutputPhase.SAFE:
            _LOGGER.warning(
                "CAN output: bank data is stale (%.0f s old): sending safe frames (zero limits, error flags)",
                data_age or 0.0,
            )
        elif phase is OutputPhase.SILENT:
            _LOGGER.warning(
                "CAN output: no bank data for %.0f s: stopped transmitting so the inverter falls back",
                self.silent_after,
            )
        else:
            _LOGGER.info("CAN output: waiting for the first battery data")


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
