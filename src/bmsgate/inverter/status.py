"""What every inverter output shares: the :class:`InverterStatus` value and its pure helpers.

The Modbus and CAN bridges both present the same virtual battery: the packs read from the hub
(:func:`read_packs`), aggregated into a bank (bank.py) and passed through the limit engine (limits.py).
The inverter controller (controller.py) does that once per refresh for every output; the result is an
:class:`InverterStatus`, a pure value that register maps and CAN profiles encode and that the Home
Assistant sink reads to show the limits and why charging is throttled.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Iterable
from typing import Any

from bmsgate.inverter.bank import BankState
from bmsgate.inverter.limits import ChargeMode, LimitReason, Limits, TemperatureDerating

__all__ = [
    "BankStatus",
    "FlowDirection",
    "InverterLiveness",
    "InverterStatus",
    "combined_presence",
    "expired",
    "initial_status",
]

_LOGGER = logging.getLogger(__name__)


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
        inverter_present: whether the inverter's signs of life are seen (any output's); None when not
            watched (yet).
        updated_at: monotonic time of this status.
        sequence: counts the statuses the controller published (0: none computed yet).
        data_age: seconds since the newest snapshot of any bank pack, at `updated_at` (None: never seen).
        last_fresh: the last bank that was not stale (this one, when fresh): outputs that keep showing
            measurements while the bank is stale take them from here.
        temperature_derating: which end (cold / hot) of the temperature curves derates the bank, so
            warnings name the real cause.
    """

    bank: BankState
    limits: Limits
    heartbeat: int = 0
    inverter_present: bool | None = None
    updated_at: float = 0.0
    sequence: int = 0
    data_age: float | None = None
    last_fresh: BankState | None = None
    temperature_derating: TemperatureDerating = dataclasses.field(default_factory=TemperatureDerating)

    def age(self, now: float) -> float:
        """Seconds since this status was computed."""
        return max(now - self.updated_at, 0.0)

    def data_age_at(self, now: float) -> float | None:
        """Seconds since the newest bank data at `now` (it kept ageing since the status was computed)."""
        return None if self.data_age is None else self.data_age + self.age(now)

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
            "sequence": self.sequence,
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


def expired(status: InverterStatus) -> InverterStatus:
    """`status` as an output must present it once it is too old to trust: the bank stale, limits 0.

    The controller normally refreshes long before this matters; it is the fail-safe for a controller
    that stopped (principle 7): an output never keeps telling the inverter yesterday's limits.
    """
    bank = status.bank
    if bank.stale and status.limits.stale:
        return status
    # The shape aggregate() gives a bank without fresh packs: no measurements, last snapshots kept.
    blind = BankState(battery_ids=bank.battery_ids, offline=(*bank.online, *bank.offline), missing_ids=bank.battery_ids)
    limits = dataclasses.replace(
        status.limits,
        charge_current=0.0,
        discharge_current=0.0,
        charge_reason=LimitReason.STALE_DATA,
        discharge_reason=LimitReason.STALE_DATA,
        voltage_reason=LimitReason.STALE_DATA,
        stale=True,
    )
    last_fresh = status.last_fresh if bank.stale else bank
    return dataclasses.replace(
        status, bank=blind, limits=limits, last_fresh=last_fresh, temperature_derating=TemperatureDerating()
    )


def combined_presence(verdicts: Iterable[bool | None]) -> bool | None:
    """One inverter-present verdict from every output's: seen by any is present; missing only when all say so."""
    known = [verdict for verdict in verdicts if verdict is not None]
    if not known:
        return None
    return any(known)


class InverterLiveness:
    """Whether the inverter is still there, from its signs of life (pure; time is passed in).

    Every output has its own sign: a CAN keep-alive (0x305) or request (0x301) frame, a Modbus heartbeat
    register the master rewrites. Presence changes are logged once each.

    Args:
        timeout: seconds without a sign of life after which the inverter counts as missing.
        started: monotonic time the watch began (the inverter gets one full timeout to appear).
        what: names the sign in log lines (``CAN keep-alive``, ``Modbus heartbeat``).
    """

    def __init__(self, timeout: float, started: float, *, what: str = "sign of life") -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.what = what
        self._seen_at = started
        self._present: bool | None = None
        self.signs_seen = 0

    @property
    def present(self) -> bool | None:
        """True while signs arrive, False once they stopped, None before the first verdict."""
        return self._present

    def seen(self, now: float) -> None:
        """Record a sign of life."""
        self._seen_at = now
        self.signs_seen += 1
        self._set(present=True)

    def check(self, now: float) -> bool | None:
        """Re-evaluate at `now`; returns :attr:`present`."""
        if now - self._seen_at > self.timeout:
            self._set(present=False)
        return self._present

    def _set(self, *, present: bool) -> None:
        if present == self._present:
            return
        if present:
            _LOGGER.info("inverter %s: %s", "seen" if self._present is None else "back", self.what)
        else:
            _LOGGER.warning("inverter missing: no %s for more than %.1f s", self.what, self.timeout)
        self._present = present
