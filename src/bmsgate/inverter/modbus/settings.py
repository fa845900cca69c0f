"""`ModbusSettings`: the ``outputs.modbus`` section of the configuration.

The bank, its limits and the refresh interval are the ``inverter`` section's
(:class:`~bmsgate.inverter.settings.InverterSettings`), shared with every inverter output.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

__all__ = ["ModbusSettings"]


class ModbusSettings(BaseModel):
    """How the inverter bridge talks Modbus.

    Attributes:
        mode: ``tcp`` — a Modbus TCP server on `host`:`port`; ``rtu`` — an RTU slave on `serial_port`;
            ``client`` — write the map's holding registers into another device every `client_interval`.
        client_transport: for ``client`` mode, reach the device over ``tcp`` (`host`:`port`) or ``rtu``.
        host: address to listen on (server) or of the device (client).
        port: TCP port.
        serial_port / baudrate / parity / stopbits / bytesize: the RS485 line (``rtu`` and RTU client).
        slave_id: our unit id as a server, or the device's unit id as a client.
        register_map: a built-in map name (``generic``, ``byd-hvm-fronius``) or a path to a YAML file.
        client_interval: s between writes in ``client`` mode.
        client_timeout: s a client request may take.
        heartbeat_in_period: s between the inverter's writes of the heartbeat register.
        heartbeat_in_missed_periods: periods without a change before the inverter counts as missing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    mode: Literal["tcp", "rtu", "client"] = "tcp"
    client_transport: Literal["tcp", "rtu"] = "tcp"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    serial_port: str | None = None
    baudrate: Annotated[int, Field(ge=300, le=1_000_000)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    slave_id: Annotated[int, Field(ge=1, le=247)] = 1
    register_map: str = "generic"
    client_interval: PositiveFloat = 5.0
    client_timeout: PositiveFloat = 2.0
    heartbeat_in_period: PositiveFloat = 60.0
    heartbeat_in_missed_periods: Annotated[int, Field(ge=1)] = 3

    @model_validator(mode="after")
    def _serial_port_when_needed(self) -> Self:
        uses_serial = self.mode == "rtu" or (self.mode == "client" and self.client_transport == "rtu")
        if uses_serial and not self.serial_port:
            raise ValueError("serial_port is required for RTU")
        return self

    @property
    def heartbeat_in_timeout(self) -> float:
        """Seconds without a heartbeat change after which the inverter counts as missing."""
        return self.heartbeat_in_period * self.heartbeat_in_missed_periods
