"""`InverterStatus`: what the inverter bridge currently tells the inverter, as one pure value.

The Modbus sink builds one after every refresh; the register map encodes it, and other outputs (the
Home Assistant sink) read it to show the limits, the bank and why charging is throttled.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from bmsgate.bank import BankState
from bmsgate.limits import ChargeMode, LimitReason, Limits

__all__ = ["BankStatus", "FlowDirection", "InverterStatus", "initial_status"]


class BankStatus(enum.StrEnum):
    """Overall state of the bank as the inverter should see it."""

    STARTING = "starting"
    """No pack has reported yet."""
    OK = "ok"
    DEGRADED = "degraded"
    """Some packs are stale; the rest carry on with scaled-down limits."""
    FAULT = "fault"
    """A protection alarm is active."""
    STALE = "stale"
    """No fresh pack: limits are 0, the heartbeat stops."""


class FlowDirection(enum.StrEnum):
    """Whether the bank is charging, discharging or idle."""

    IDLE = "idle"
    CHARGING = "charging"
    DISCHARGING = "discharging"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InverterStatus:
    """The bank, its limits and the bridge's own state at one moment.

    Attributes:
        bank: the aggregated bank.
        limits: the limits being published.
        heartbeat: the outgoing heartbeat counter (increments on fresh data, stops when stale).
        inverter_present: whether the inverter's heartbeat is seen; None when not watched (yet).
        updated_at: monotonic time of this status.
    """

    bank: BankState
    limits: Limits
    heartbeat: int = 0
    inverter_present: bool | None = None
    updated_at: float = 0.0

    @property
    def state(self) -> BankStatus:
        """Overall state, worst first."""
        if self.bank.stale:
            return BankStatus.STALE if self.bank.ever_seen else BankStatus.STARTING
        if self.bank.protection_active:
            return BankStatus.FAULT
        if self.bank.degraded:
            return BankStatus.DEGRADED
        return BankStatus.OK

    @property
    def direction(self) -> FlowDirection:
        """Flow direction (idle when unknown or stale)."""
        if self.bank.stale:
            return FlowDirection.IDLE
        if self.bank.is_charging:
            return FlowDirection.CHARGING
        if self.bank.is_discharging:
            return FlowDirection.DISCHARGING
        return FlowDirection.IDLE

    @property
    def reason(self) -> LimitReason:
        """Why the inverter is throttled (see :attr:`Limits.reason`)."""
        return self.limits.reason

    @property
    def charge_mode(self) -> ChargeMode:
        """Bulk or float."""
        return self.limits.charge_mode

    def to_dict(self) -> dict[str, Any]:
        """JSON form for other outputs."""
        return {
            "state": self.state.value,
            "direction": self.direction.value,
            "reason": self.reason.value,
            "heartbeat": self.heartbeat,
            "inverter_present": self.inverter_present,
            "limits": self.limits.to_dict(),
            "bank": self.bank.to_dict(),
        }


def initial_status(battery_ids: tuple[str, ...] = ()) -> InverterStatus:
    """The status before anything was computed: no data, all limits 0."""
    return InverterStatus(
        bank=BankState(battery_ids=battery_ids, missing_ids=battery_ids),
        limits=Limits(
            charge_voltage=None,
            charge_current=0.0,
            discharge_current=0.0,
            charge_reason=LimitReason.NO_DATA,
            discharge_reason=LimitReason.NO_DATA,
            voltage_reason=LimitReason.NO_DATA,
            charge_mode=ChargeMode.BULK,
            stale=True,
            max_charge_current=0.0,
            max_discharge_current=0.0,
        ),
    )
