"""`Rs485Settings`: the ``outputs.rs485`` section (Pylontech LV RS485, battery side).

The bank, its limits and the freshness budget ``safe_after`` are the ``inverter`` section's, shared with
every inverter output. A dialect (``voltronic``, ``srne``, ``easun-smx2``, ``pylontech``) sets how the
inverter polls and the details the facts leave open; each of those can be overridden here.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator

if TYPE_CHECKING:
    from bmsgate.inverter.rs485.pylontech import BatteryIdentity, Rs485Dialect

__all__ = ["Rs485Settings"]

_Byte = Annotated[int, Field(ge=1, le=0xFE)]
_Ascii = Annotated[str, Field(pattern=r"^[ -~]*$")]


class Rs485Settings(BaseModel):
    """How the gateway answers an inverter's Pylontech RS485 polls.

    Attributes:
        port: the RS485 adapter (``/dev/ttyUSB0``) or a pyserial URL.
        baudrate: bit/s; inverter links run at 9600 (Pylontech DIP 1 on), 8N1.
        dialect: the inverter family (``bmsgate inverters list`` shows them).
        addresses: ADRs answered, overriding the dialect's (empty list: every address).
        reply_address: ADR in replies, overriding the dialect's.
        protocol_version: VER of the 0x4F reply, overriding the dialect's.
        discharge_limit_sign: sign of the 0x92 discharge limit, overriding the dialect's.
        system_current_scale: A per step of the 0x63 current limits (0.1 or 0.01), overriding the dialect's.
        silent_after: s since the newest data of any pack after which no request is answered, overriding
            the dialect's; must exceed ``inverter.safe_after`` and the batteries' ``stale_after`` (the safe
            replies come in between; the output keeps that order regardless).
        poll_timeout: s without a request before the inverter counts as missing.
        battery_name / manufacturer / serial_number: what 0x51 and 0x93 report.
        reopen_backoff_max: s; port reopen attempts back off up to this long.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    port: str = Field(min_length=1)
    baudrate: Literal[9600, 19200, 115200] = 9600
    dialect: str = "voltronic"
    addresses: tuple[_Byte, ...] | None = None
    reply_address: _Byte | None = None
    protocol_version: Annotated[int, Field(ge=0, le=0xFF)] | None = None
    discharge_limit_sign: Literal["negative", "positive"] | None = None
    system_current_scale: float | None = None
    silent_after: PositiveFloat | None = None
    poll_timeout: PositiveFloat = 10.0
    battery_name: Annotated[_Ascii, Field(max_length=10)] = "BMSGATE"
    manufacturer: Annotated[_Ascii, Field(max_length=20)] = "bmsgate"
    serial_number: Annotated[_Ascii, Field(max_length=16)] = "BMSGATE-0000001"
    reopen_backoff_max: PositiveFloat = 30.0

    @field_validator("system_current_scale")
    @classmethod
    def _known_scale(cls, value: float | None) -> float | None:
        if value is not None and value not in {0.1, 0.01}:
            raise ValueError("the 0x63 current unit is 0.1 A or 0.01 A")
        return value

    @field_validator("dialect")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        # The encoder is imported only when an RS485 section is there: `bmsgate run` without one never loads it.
        from bmsgate.inverter.rs485.pylontech import DIALECTS  # noqa: PLC0415

        if value not in DIALECTS:
            raise ValueError(f"unknown RS485 dialect {value!r}; known: {', '.join(sorted(DIALECTS))}")
        return value

    def resolved_dialect(self) -> Rs485Dialect:
        """The dialect with this section's overrides applied."""
        from bmsgate.inverter.rs485.pylontech import DIALECTS  # noqa: PLC0415

        negative = None if self.discharge_limit_sign is None else self.discharge_limit_sign == "negative"
        dialect = DIALECTS[self.dialect].with_overrides(
            reply_address=self.reply_address,
            protocol_version=self.protocol_version,
            discharge_limit_negative=negative,
            system_current_scale=self.system_current_scale,
            silent_after=self.silent_after,
        )
        if self.addresses is not None:
            # An empty list is a choice ("every address"), not "not set".
            dialect = dataclasses.replace(dialect, addresses=self.addresses or None)
        return dialect

    def identity(self) -> BatteryIdentity:
        """Names for 0x51 / 0x93."""
        from bmsgate.inverter.rs485.pylontech import BatteryIdentity  # noqa: PLC0415

        return BatteryIdentity(
            battery_name=self.battery_name, manufacturer=self.manufacturer, serial_number=self.serial_number
        )
