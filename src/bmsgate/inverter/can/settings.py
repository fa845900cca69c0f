"""`CanSettings`: the ``outputs.can`` section of the configuration.

The bank, its limits and the freshness budget ``safe_after`` are the ``inverter`` section's
(:class:`~bmsgate.inverter.settings.InverterSettings`), shared with every inverter output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

__all__ = ["CanSettings"]

_Percent = Annotated[float, Field(ge=0, le=100)]


class CanSettings(BaseModel):
    """How the inverter bridge talks CAN.

    Attributes:
        interface: ``socketcan`` (an MCP2515 HAT or USB adapter brought up with
            ``ip link set can0 up type can bitrate 500000``), ``slcan`` (serial-line adapters; `bitrate`
            is set by us) or ``virtual`` (python-can's in-process bus, for the demo and tests).
        channel: ``can0``, a serial port for slcan (``/dev/ttyACM0``), or any name for virtual.
        bitrate: bit/s (slcan only; socketcan's bitrate belongs to ``ip link``).
        profile: a built-in profile (``bmsgate inverters list``: ``pylon``, ``deye``, ``victron``, ``sma``, ...) or a
            profile YAML path.
        period: s between frame sets, overriding the profile's.
        silent_after: s since the newest data of any pack after which nothing is sent at all. It must
            exceed ``inverter.safe_after`` and every bank battery's ``stale_after`` (the gateway's
            configuration checks that): the safe frame set (zero limits, error flags) is what the
            inverter hears between the two. The output enforces the order regardless: data older than
            `silent_after` counts as stale for it, and silence only follows a few periods of safe
            frames (see :class:`~bmsgate.inverter.can.state.PhaseTracker`).
        keepalive_timeout: s without the inverter's keep-alive/request frame before it counts as missing.
        soc_forcing / stop_charge_with_cvl / never_zero_cvl / invalid_markers / victron_extras: override the
            profile's quirks (``victron_extras`` sends the profile's ``extra_frames``).
        manufacturer: override the name in 0x35E (at most 8 ASCII characters).
        force_charge_soc: % at or below which 0x35C requests "force charge I".
        force_charge_ii_soc: % at or below which 0x35C requests "force charge II".
        force_charge_hysteresis: % above the threshold before a force-charge request clears.
        log_file: append every transmitted frame to this file in candump log format (checked when the
            output is built: an unwritable path is a configuration error).
        dry_run: open no bus at all; only log (requires `log_file` to be useful).
        reopen_backoff_max: s; bus reopen attempts back off up to this long.
        send_timeout: s one frame may wait for room in the transmit queue.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    interface: Literal["socketcan", "slcan", "virtual"] = "socketcan"
    channel: str = Field(default="can0", min_length=1)
    bitrate: Annotated[int, Field(ge=10_000, le=1_000_000)] = 500_000
    profile: str = Field(default="pylon", min_length=1)
    period: Annotated[float, Field(gt=0, le=60)] | None = None
    silent_after: PositiveFloat = 300.0
    keepalive_timeout: PositiveFloat = 5.0
    soc_forcing: bool | None = None
    stop_charge_with_cvl: bool | None = None
    never_zero_cvl: bool | None = None
    invalid_markers: bool | None = None
    victron_extras: bool | None = None
    manufacturer: Annotated[str, Field(max_length=8, pattern=r"^[ -~]*$")] | None = None
    force_charge_soc: _Percent = 5.0
    force_charge_ii_soc: _Percent = 2.0
    force_charge_hysteresis: Annotated[float, Field(ge=0, le=50)] = 5.0
    log_file: Path | None = None
    dry_run: bool = False
    reopen_backoff_max: PositiveFloat = 30.0
    send_timeout: PositiveFloat = 0.2

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> Self:
        if self.force_charge_ii_soc > self.force_charge_soc:
            raise ValueError("force_charge_ii_soc must not exceed force_charge_soc")
        return self

    @property
    def quirk_overrides(self) -> dict[str, bool]:
        """The quirks the configuration sets explicitly."""
        names = ("soc_forcing", "stop_charge_with_cvl", "never_zero_cvl", "invalid_markers", "victron_extras")
        return {name: value for name in names if (value := getattr(self, name)) is not None}

    @property
    def interface_name(self) -> str:
        """The interface name written into the candump log."""
        return self.channel if self.interface != "slcan" else "slcan0"
