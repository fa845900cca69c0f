"""The ``outputs.fleet`` configuration section: how a gateway reports to its fleet server.

Validation reads the credentials file written by ``bmsgate fleet enroll`` (so ``config check`` finds an
unreadable or invalid one) and checks an explicit broker URL against it: a file made for a TLS broker must
not be used over plain MQTT, nor the other way round. Every problem is reported at once, each under its key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bmsgate.errors import ConfigError
from bmsgate.fleet.credentials import GatewayCredentials, read_credentials

__all__ = [
    "BUFFER_FILE_NAME",
    "BufferSettings",
    "FixedLocationSettings",
    "FleetSettings",
    "GpsdLocationSettings",
    "LocationSettings",
    "NmeaLocationSettings",
    "UPDATES_DIR_NAME",
    "UpdateSettings",
]

BUFFER_FILE_NAME: Final = "fleet-buffer.sqlite"
UPDATES_DIR_NAME: Final = "packs"
_DEFAULT_BUFFER_BYTES: Final = 64 * 1024 * 1024
"""64 MiB: ~2.3x what 48 h of telemetry for 8 batteries at 10 s needs (see docs/fleet/agent.md)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


class FixedLocationSettings(_Strict):
    """Coordinates written into the configuration (reported with fix ``fixed``)."""

    type: Literal["fixed"]
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    alt_m: float | None = Field(default=None, ge=-1000, le=20000)


class GpsdLocationSettings(_Strict):
    """A running gpsd (its JSON protocol over TCP)."""

    type: Literal["gpsd"]
    host: str = "127.0.0.1"
    port: int = Field(default=2947, ge=1, le=65535)
    lost_after: float = Field(default=15.0, gt=0, le=3600)
    """Seconds without a position before the location is reported lost (fix ``none``)."""


class NmeaLocationSettings(_Strict):
    """A GPS receiver on a serial port speaking NMEA 0183 (GGA and RMC sentences)."""

    type: Literal["nmea"]
    port: str
    """``/dev/ttyACM0``, ``/dev/serial0``, ... (or a pyserial URL)."""
    baudrate: int = Field(default=9600, gt=0)
    lost_after: float = Field(default=15.0, gt=0, le=3600)
    """Seconds without a valid fix before the location is reported lost (fix ``none``)."""


LocationSettings = Annotated[
    FixedLocationSettings | GpsdLocationSettings | NmeaLocationSettings, Field(discriminator="type")
]


class BufferSettings(_Strict):
    """The on-disk store-and-forward buffer for telemetry and events."""

    path: Path | None = None
    """The SQLite file (default: ``fleet-buffer.sqlite`` in the gateway's ``state_dir``)."""
    max_bytes: int = Field(default=_DEFAULT_BUFFER_BYTES, ge=64 * 1024, strict=True)
    """Bound of the stored (compressed) payloads; beyond it the oldest messages are dropped and counted."""
    backfill_rate: float = Field(default=20.0, gt=0, le=10_000)
    """Messages per second sent from the backlog after an outage (live data goes first)."""

    @field_validator("path")
    @classmethod
    def _writable(cls, path: Path | None) -> Path | None:
        # Nothing is created: `config check` must leave no files behind (the agent creates it when it runs).
        if path is None:
            return None
        if path.is_dir():
            raise ValueError(f"{path} is a directory; name the buffer file")
        existing = path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"cannot create {path}: {existing} is not a writable directory")
        return path


class UpdateSettings(_Strict):
    """Applying the fleet's desired packs (docs/fleet/updates-on-the-gateway.md)."""

    enabled: bool = True
    directory: Path | None = None
    """Journal and slots (default: ``packs`` in the gateway's ``state_dir``)."""
    precondition_timeout: float = Field(default=1800.0, gt=0, le=7 * 86_400)
    """Seconds an inverter-affecting change waits for no alarms and fresh data before it fails."""
    precondition_interval: float = Field(default=5.0, gt=0, le=600)
    health_polls: int = Field(default=5, ge=1, le=1000)
    """Good polls needed from every battery whose definition changed."""
    health_failed_polls: int = Field(default=3, ge=1, le=1000)
    """Failed polls in a row that fail the health check at once."""
    health_timeout: float = Field(default=300.0, gt=0, le=86_400)
    health_min_duration: float = Field(default=5.0, ge=0, le=86_400)
    """Seconds a changed output must keep serving before the update is committed."""
    software_root: Path | None = Path("/opt/bmsgate")
    """The A/B environments of the gateway software (``venvs/a``, ``venvs/b``, ``current``); None: software
    updates are refused with reason ``install``."""
    install_timeout: float = Field(default=600.0, gt=0, le=86_400)
    """Seconds each pip step of a software install may take."""

    @model_validator(mode="after")
    def _duration_within_timeout(self) -> Self:
        if self.health_min_duration > self.health_timeout:
            raise ValueError("health_min_duration must not be longer than health_timeout")
        return self


class FleetSettings(_Strict):
    """Reporting to a fleet server (docs/fleet/agent.md)."""

    credentials: Path
    """The file ``bmsgate fleet enroll GATEWAY_ID`` wrote (broker URL, CA, user and password)."""
    broker: str | None = None
    """Reach the broker at another URL than the credentials name (e.g. through a local tunnel); same scheme."""
    name: str | None = Field(default=None, min_length=1, max_length=128)
    """The site's name on the dashboard (default: the gateway's ``name``)."""
    site: str | None = Field(default=None, min_length=1, max_length=128)
    tags: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = Field(default=(), max_length=32)
    interval: float = Field(default=10.0, ge=0.2, le=3600)
    """Seconds between telemetry messages."""
    state_interval: float = Field(default=900.0, ge=1, le=86_400)
    """Seconds between republications of the retained state (uptime); changes are published at once."""
    location: LocationSettings | None = None
    buffer: BufferSettings = BufferSettings()
    updates: UpdateSettings = UpdateSettings()
    keepalive: int = Field(default=60, ge=5, le=3600)
    reconnect_max: float = Field(default=60.0, gt=0, le=3600)
    """Cap (s) of the reconnect delay after the broker went away."""

    @field_validator("credentials")
    @classmethod
    def _credentials_readable(cls, path: Path) -> Path:
        try:
            read_credentials(path)
        except ConfigError as exc:
            raise ValueError(_problems_text(exc)) from None
        return path

    @field_validator("broker")
    @classmethod
    def _broker_matches(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, not {url!r}")
        path = info.data.get("credentials")
        if path is None:
            return url
        try:
            credentials = read_credentials(path)
        except ConfigError:
            return url  # changed since the credentials key was checked: that key reports it on the next check
        expected = "mqtts" if credentials.uses_tls else "mqtt"
        if parts.scheme != expected:
            raise ValueError(
                f"scheme {parts.scheme}:// does not match the credentials file ({expected}:// in {path}): "
                "a file made for a TLS broker must not be used without TLS, and the other way round"
            )
        return url

    @model_validator(mode="after")
    def _state_after_telemetry(self) -> Self:
        if self.state_interval < self.interval:
            raise ValueError("state_interval must not be shorter than interval")
        return self

    def load_credentials(self) -> GatewayCredentials:
        """The credentials (read again: the file may have been renewed since validation).

        Raises:
            ConfigError: the file is unreadable or invalid.
        """
        return read_credentials(self.credentials, key_path="outputs.fleet.credentials")


def _problems_text(error: ConfigError) -> str:
    parts = []
    for problem in error.problems:
        where = problem.key_path.removeprefix("fleet.credentials").lstrip(".")
        file = f"{problem.source}: " if problem.source else ""
        parts.append(f"{file}{where}: {problem.reason}" if where else f"{file}{problem.reason}")
    return "; ".join(parts)
