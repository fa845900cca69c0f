"""`InverterSettings`: the ``inverter`` section — the bank and its limits, shared by every inverter output."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from bmsgate.inverter.bank import DEFAULT_SOC_EXTREME_BAND
from bmsgate.inverter.limits import LimitSettings

__all__ = ["InverterSettings"]


class InverterSettings(BaseModel):
    """The one bank every inverter output (Modbus, CAN) presents, and how its limits are computed.

    Attributes:
        batteries: the packs forming the bank (hub battery ids); empty means every battery in the hub.
        refresh_interval: s between recomputations when no new snapshot arrives (staleness, ramps and
            timers advance on this tick); a snapshot of a bank pack recomputes at once.
        safe_after: s since a pack's newest snapshot after which every inverter output treats it as
            stale (tighter than the hub's budget); None uses the hub's per-battery budget alone.
        status_timeout: s an output keeps presenting a status before it treats it as stale itself
            (zero limits); only reached when the controller stopped computing.
        soc_extreme_band: %; near empty / full report the extreme pack's SoC (see bank.py).
        limits: the limit engine's settings.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    batteries: tuple[str, ...] = ()
    refresh_interval: PositiveFloat = 1.0
    safe_after: PositiveFloat | None = None
    status_timeout: PositiveFloat = 10.0
    soc_extreme_band: Annotated[float, Field(ge=0, le=50)] = DEFAULT_SOC_EXTREME_BAND
    limits: LimitSettings = LimitSettings()

    @model_validator(mode="after")
    def _timeout_spans_refreshes(self) -> Self:
        if self.status_timeout <= 2 * self.refresh_interval:
            raise ValueError(
                f"status_timeout ({self.status_timeout:g} s) must be longer than two refresh intervals "
                f"({self.refresh_interval:g} s each), or a healthy controller would look stalled"
            )
        return self
