"""Where the site is: fixed coordinates, gpsd, or an NMEA receiver on a serial port.

Each source runs until cancelled and reports every :class:`~bmsgate.fleet.protocol.Location` it learns
to a callback. A source never makes a position up: when the receiver loses its fix, when gpsd or the port
goes away, or when nothing arrives for ``lost_after`` seconds, it reports fix ``none`` without
coordinates, and keeps trying to get one back.

gpsd is spoken to directly (its JSON protocol over TCP: ``?WATCH={"enable":true,"json":true}``, then one
JSON report per line, of which ``TPV`` carries the position); no client library needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, Protocol

from pydantic import ValidationError

from bmsgate.errors import DeviceTimeout, TransportError
from bmsgate.fleet.agent.nmea import NmeaError, NmeaReceiver, parse_sentence
from bmsgate.fleet.agent.settings import (
    FixedLocationSettings,
    GpsdLocationSettings,
    LocationSettings,
    NmeaLocationSettings,
)
from bmsgate.fleet.protocol import Location, LocationFix
from bmsgate.runtime.backoff import Backoff

__all__ = [
    "FixedLocation",
    "GpsdLocation",
    "LocationReport",
    "LocationSource",
    "NmeaSerialLocation",
    "location_from_tpv",
    "location_source",
]

_LOGGER = logging.getLogger(__name__)
LocationReport = Callable[[Location], None]
_WATCH: Final = b'?WATCH={"enable":true,"json":true}\n'
_MAX_LINE: Final = 64 * 1024
"""gpsd's longest reports (SKY with many satellites) are a few KB; a longer line is not gpsd."""
_MAX_NMEA_BUFFER: Final = 1024


class LocationSource(Protocol):
    """Something that knows where the site is."""

    @property
    def kind(self) -> Literal["gpsd", "nmea", "config"]:
        """The ``source`` its locations name."""
        ...

    async def run(self, report: LocationReport) -> None:
        """Report locations until cancelled."""
        ...


def _lost(source: Literal["gpsd", "nmea", "config"]) -> Location:
    return Location(source=source, fix=LocationFix.NONE)


class FixedLocation:
    """Coordinates from the configuration: reported once, with fix ``fixed``."""

    kind: Final = "config"

    def __init__(self, lat: float, lon: float, alt_m: float | None = None) -> None:
        self.location = Location(source="config", fix=LocationFix.FIXED, lat=lat, lon=lon, alt_m=alt_m)

    async def run(self, report: LocationReport) -> None:
        """Report the coordinates, then wait until cancelled."""
        report(self.location)
        await asyncio.Event().wait()


def _number(report: Mapping[str, Any], key: str) -> float | None:
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _time(text: object) -> float | None:
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def location_from_tpv(report: Mapping[str, Any]) -> Location:
    """The location in one gpsd TPV report (mode 2: 2D fix, 3: 3D fix, else none).

    Out-of-range or missing values never become a position: the result is fix ``none`` then.
    """
    mode = report.get("mode")
    lat, lon = _number(report, "lat"), _number(report, "lon")
    if mode not in (2, 3) or lat is None or lon is None:
        return _lost("gpsd")
    altitude = _number(report, "altMSL")
    if altitude is None:
        altitude = _number(report, "alt")
    try:
        return Location(
            source="gpsd",
            fix=LocationFix.FIX_3D if mode == 3 else LocationFix.FIX_2D,
            lat=lat,
            lon=lon,
            alt_m=altitude if mode == 3 else None,
            accuracy_m=_number(report, "eph"),
            time=_time(report.get("time")),
        )
    except ValidationError:
        _LOGGER.debug("gpsd TPV out of range: %s", {key: report.get(key) for key in ("lat", "lon", "eph")})
        return _lost("gpsd")


class GpsdLocation:
    """Positions from a gpsd daemon.

    Args:
        host: where gpsd listens.
        port: its port (2947).
        lost_after: seconds without a position before fix ``none`` is reported.
        reconnect_max: cap of the delay between connection attempts.
    """

    kind: Final = "gpsd"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 2947, *, lost_after: float = 15.0, reconnect_max: float = 30.0
    ) -> None:
        self.host = host
        self.port = port
        self.lost_after = lost_after
        self._backoff = Backoff(min(0.5, reconnect_max), reconnect_max, jitter=0.25)

    async def run(self, report: LocationReport) -> None:
        """Follow gpsd until cancelled, reconnecting when it goes away."""
        failing = False
        while True:
            try:
                await self._session(report)
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                # ValueError: asyncio's StreamReader refuses a line beyond its limit.
                if not failing:
                    _LOGGER.warning("gpsd at %s:%d: %s; retrying", self.host, self.port, exc or type(exc).__name__)
                failing = True
            report(_lost("gpsd"))
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self, report: LocationReport) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=_MAX_LINE)
        try:
            writer.write(_WATCH)
            await writer.drain()
            self._backoff.reset()
            last_fix: bool | None = None
            while True:
                try:
                    async with asyncio.timeout(self.lost_after):
                        line = await self._next_position_line(reader)
                except TimeoutError:
                    if last_fix is not False:
                        report(_lost("gpsd"))
                        last_fix = False
                    continue
                location = location_from_tpv(line)
                report(location)
                last_fix = location.fix is not LocationFix.NONE
                if not last_fix:
                    # A no-fix TPV is what gpsd says once per second while the sky is hidden: the
                    # lost_after timer only counts time without any position.
                    continue
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    async def _next_position_line(reader: asyncio.StreamReader) -> Mapping[str, Any]:
        """The next TPV report (others, and lines that are not JSON objects, are skipped)."""
        while True:
            line = await reader.readline()
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("class") == "TPV":
                return data


class NmeaSerialLocation:
    """Positions from a GPS receiver on a serial port (NMEA 0183).

    Args:
        port: the serial device (or pyserial URL).
        baudrate: line speed (most receivers: 9600, older ones 4800).
        lost_after: seconds without a valid fix before fix ``none`` is reported.
    """

    kind: Final = "nmea"

    def __init__(self, port: str, *, baudrate: int = 9600, lost_after: float = 15.0) -> None:
        self.port = port
        self.baudrate = baudrate
        self.lost_after = lost_after
        self.rejected = 0
        """Lines that were not valid sentences (noise, checksum errors)."""
        self._backoff = Backoff(0.5, 30.0, jitter=0.25)

    async def run(self, report: LocationReport) -> None:
        """Read the receiver until cancelled, reopening the port when it goes away."""
        from bmsgate.transports.serial import SerialTransport  # noqa: PLC0415 - needs the [serial] extra

        failing = False
        while True:
            transport = SerialTransport(self.port, baudrate=self.baudrate)
            try:
                await transport.open()
                self._backoff.reset()
                await self._read(transport, report)
            except TransportError as exc:
                if not failing:
                    _LOGGER.warning("GPS receiver on %s: %s; retrying", self.port, exc)
                failing = True
            finally:
                with contextlib.suppress(TransportError):
                    await transport.close()
            report(_lost("nmea"))
            await asyncio.sleep(self._backoff.next_delay())

    async def _read(self, transport: Any, report: LocationReport) -> None:
        receiver = NmeaReceiver()
        pending = b""
        loop = asyncio.get_running_loop()
        last_position = loop.time()
        lost_reported = False
        while True:
            remaining = max(0.01, last_position + self.lost_after - loop.time())
            try:
                chunk: bytes = await transport.receive(timeout=remaining)
            except DeviceTimeout:
                chunk = b""
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > _MAX_NMEA_BUFFER:
                pending = b""
                self.rejected += 1
            for raw in lines:
                has_position = self._take(raw, receiver)
                if has_position:
                    last_position = loop.time()
                    lost_reported = False
                    report(self._location(receiver))
                elif has_position is False and not lost_reported:
                    report(_lost("nmea"))
                    lost_reported = True
            if loop.time() - last_position >= self.lost_after and not lost_reported:
                report(_lost("nmea"))
                lost_reported = True

    def _take(self, raw: bytes, receiver: NmeaReceiver) -> bool | None:
        """Feed one line; True: a valid position, False: the receiver says it has no fix, None: neither."""
        text = raw.decode("ascii", errors="replace").strip()
        if not text:
            return None
        try:
            fix = parse_sentence(text)
        except NmeaError as exc:
            self.rejected += 1
            _LOGGER.debug("GPS receiver on %s: %s", self.port, exc)
            return None
        if fix is None:
            return None
        return receiver.feed(fix)

    @staticmethod
    def _location(receiver: NmeaReceiver) -> Location:
        try:
            return Location(
                source="nmea",
                fix=receiver.fix,
                lat=receiver.lat,
                lon=receiver.lon,
                alt_m=receiver.alt_m,
                accuracy_m=receiver.accuracy_m,
                time=receiver.time,
            )
        except ValidationError:
            return _lost("nmea")


def location_source(settings: LocationSettings) -> LocationSource:
    """The source a ``location:`` setting describes."""
    if isinstance(settings, FixedLocationSettings):
        return FixedLocation(settings.lat, settings.lon, settings.alt_m)
    if isinstance(settings, GpsdLocationSettings):
        return GpsdLocation(settings.host, settings.port, lost_after=settings.lost_after)
    assert isinstance(settings, NmeaLocationSettings)
    return NmeaSerialLocation(settings.port, baudrate=settings.baudrate, lost_after=settings.lost_after)
