"""Heartbeat in: notice when the inverter stops writing its heartbeat register (pure).

Real masters write a register periodically (a Fronius Gen24 alternates 0x00FF / 0xFF00 every 60 s).
If the value has not changed for `timeout` seconds the inverter counts as missing. Rewriting the same
value is not a heartbeat: a stuck master that repeats itself is still stuck.
"""

from __future__ import annotations

from bmsgate.inverter.status import InverterLiveness

__all__ = ["HeartbeatMonitor"]


class HeartbeatMonitor(InverterLiveness):
    """Tracks the last *change* of a heartbeat register; time is passed in.

    Args:
        timeout: seconds without a change after which the inverter is missing.
        started: monotonic time the watch began (the inverter gets one full timeout to appear).
    """

    def __init__(self, timeout: float, started: float) -> None:
        super().__init__(timeout, started, what="Modbus heartbeat change")
        self._value: int | None = None

    def observe(self, value: int, now: float) -> None:
        """Record a value the master wrote; only a change is a sign of life."""
        if value != self._value:
            self._value = value
            self.seen(now)
