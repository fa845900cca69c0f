"""Heartbeat in: notice when the inverter stops writing its heartbeat register (pure).

Real masters write a register periodically (a Fronius Gen24 alternates 0x00FF / 0xFF00 every 60 s).
If the value has not changed for `timeout` seconds the inverter counts as missing. Rewriting the same
value is not a heartbeat: a stuck master that repeats itself is still stuck.
"""

from __future__ import annotations

import logging

__all__ = ["HeartbeatMonitor"]

_LOGGER = logging.getLogger(__name__)


class HeartbeatMonitor:
    """Tracks the last change of a heartbeat register; time is passed in.

    Args:
        timeout: seconds without a change after which the inverter is missing.
        started: monotonic time the watch began (the inverter gets one full timeout to appear).
    """

    def __init__(self, timeout: float, started: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._value: int | None = None
        self._changed_at = started
        self._present: bool | None = None

    @property
    def present(self) -> bool | None:
        """True while heartbeats arrive, False once they stopped, None before the first verdict."""
        return self._present

    def observe(self, value: int, now: float) -> None:
        """Record a value the master wrote."""
        if value != self._value:
            self._value = value
            self._changed_at = now
            self._set(present=True)

    def check(self, now: float) -> bool | None:
        """Re-evaluate at `now`; returns :attr:`present`."""
        if now - self._changed_at > self.timeout:
            self._set(present=False)
        return self._present

    def _set(self, *, present: bool) -> None:
        if present == self._present:
            return
        if present:
            _LOGGER.info("inverter heartbeat %s", "seen" if self._present is None else "back")
        else:
            _LOGGER.warning("inverter heartbeat missing for more than %.0f s", self.timeout)
        self._present = present
