"""NMEA 0183 position sentences (GGA, RMC): checksums, parsing, and a receiver's current fix. Pure.

A GPS receiver on a serial port talks in lines such as
``$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47``. Only what a site's location needs
is read: GGA (fix quality, position, altitude, HDOP) and RMC (validity, position, date and time). Any
talker (GP, GN, GL, GA, BD) is accepted. A line that is not a checked sentence of these two raises
:class:`NmeaError`; nothing else escapes, whatever the bytes.
"""

from __future__ import annotations

import calendar
import dataclasses
import math
import re
from typing import Final

from bmsgate.errors import BmsgateError
from bmsgate.fleet.protocol import LocationFix

__all__ = ["MAX_SENTENCE", "NmeaError", "NmeaFix", "NmeaReceiver", "parse_sentence", "split_sentence"]

MAX_SENTENCE: Final = 82
"""NMEA 0183's longest sentence, ``$`` to ``<LF>``; receivers stay under it and so must input."""
_SENTENCE: Final = re.compile(r"^\$([A-Z]{2})([A-Z]{3}),([\x20-\x7e]*)\*([0-9A-Fa-f]{2})$")
_CENTURY_PIVOT: Final = 80
_UERE_M: Final = 5.0
"""Metres of horizontal error per unit of HDOP (a common rough receiver figure)."""


class NmeaError(BmsgateError):
    """A line that is not a valid GGA or RMC sentence; `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"NMEA: {reason}")


@dataclasses.dataclass(frozen=True, slots=True)
class NmeaFix:
    """What one sentence says about the position.

    Attributes:
        kind: ``GGA`` or ``RMC``.
        valid: the receiver has a fix (GGA quality > 0, RMC status ``A``).
        lat: degrees north, None without a fix.
        lon: degrees east, None without a fix.
        alt_m: altitude above mean sea level (GGA only).
        hdop: horizontal dilution of precision (GGA only).
        time: seconds since 1970 (RMC only: GGA has no date).
    """

    kind: str
    valid: bool
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    hdop: float | None = None
    time: float | None = None


def split_sentence(line: str) -> tuple[str, list[str]]:
    """Check a sentence's form and checksum; return its type (``GGA``) and fields.

    Raises:
        NmeaError: too long, malformed, or the checksum does not match.
    """
    text = line.strip()
    if len(text) > MAX_SENTENCE:
        raise NmeaError(f"longer than {MAX_SENTENCE} characters")
    match = _SENTENCE.match(text)
    if match is None:
        raise NmeaError("not of the form $TTSSS,...*HH")
    body = text[1 : text.index("*")]
    computed = 0
    for char in body:
        computed ^= ord(char)
    if computed != int(match[4], 16):
        raise NmeaError(f"checksum {match[4].upper()} does not match {computed:02X}")
    return match[2], match[3].split(",")


def _float(text: str, what: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise NmeaError(f"{what}: not a number: {text[:16]!r}") from None
    if not math.isfinite(value):
        raise NmeaError(f"{what}: not a finite number")
    return value


def _coordinate(value: str, hemisphere: str, *, degree_digits: int, what: str) -> float | None:
    """``ddmm.mmmm`` (latitude) / ``dddmm.mmmm`` (longitude) plus N/S/E/W to signed degrees."""
    if not value and not hemisphere:
        return None
    if not re.fullmatch(rf"\d{{{degree_digits}}}\d{{2}}(\.\d{{1,8}})?", value):
        raise NmeaError(f"{what}: expected {'d' * degree_digits}mm.mmmm, got {value[:16]!r}")
    degrees = int(value[:degree_digits])
    minutes = float(value[degree_digits:])
    limit = 90 if degree_digits == 2 else 180
    if minutes >= 60 or degrees + minutes / 60 > limit:
        raise NmeaError(f"{what}: out of range: {value!r}")
    signs = {"N": 1, "S": -1} if degree_digits == 2 else {"E": 1, "W": -1}
    if hemisphere not in signs:
        raise NmeaError(f"{what}: hemisphere must be one of {'/'.join(signs)}, got {hemisphere[:4]!r}")
    return signs[hemisphere] * (degrees + minutes / 60)


def _position(fields: list[str], start: int) -> tuple[float | None, float | None]:
    lat = _coordinate(fields[start], fields[start + 1], degree_digits=2, what="latitude")
    lon = _coordinate(fields[start + 2], fields[start + 3], degree_digits=3, what="longitude")
    if (lat is None) != (lon is None):
        raise NmeaError("latitude and longitude come together")
    return lat, lon


def _utc(time_text: str, date_text: str) -> float | None:
    if not time_text or not date_text:
        return None
    time_match = re.fullmatch(r"(\d{2})(\d{2})(\d{2})(\.\d{1,6})?", time_text)
    date_match = re.fullmatch(r"(\d{2})(\d{2})(\d{2})", date_text)
    if time_match is None or date_match is None:
        raise NmeaError(f"time/date: expected hhmmss(.ss) and ddmmyy, got {time_text[:12]!r}, {date_text[:8]!r}")
    hour, minute, second = (int(time_match[index]) for index in (1, 2, 3))
    day, month, year = (int(date_match[index]) for index in (1, 2, 3))
    if hour > 23 or minute > 59 or second > 60 or not 1 <= month <= 12 or not 1 <= day <= 31:
        raise NmeaError("time/date: out of range")
    # RMC has a two-digit year: 80-99 are the 1900s (GPS started in 1980), the rest the 2000s.
    century = 1900 if year >= _CENTURY_PIVOT else 2000
    stamp = calendar.timegm((century + year, month, day, hour, minute, second, 0, 0, 0))
    return stamp + (float(time_match[4]) if time_match[4] else 0.0)


def parse_sentence(line: str) -> NmeaFix | None:
    """Parse one line; None for a valid sentence of another type (GSV, VTG, ...), which carries no position.

    Raises:
        NmeaError: the line is malformed, fails its checksum, or a GGA/RMC field is invalid.
    """
    kind, fields = split_sentence(line)
    if kind == "GGA":
        if len(fields) < 14:
            raise NmeaError(f"GGA: {len(fields)} fields, expected 14 or more")
        quality = fields[5]
        if not quality.isdigit() or len(quality) > 1:
            raise NmeaError(f"GGA: fix quality must be one digit, got {quality[:4]!r}")
        valid = int(quality) > 0
        lat, lon = _position(fields, 1)
        if valid and lat is None:
            raise NmeaError("GGA: a fix without a position")
        return NmeaFix(
            "GGA",
            valid,
            lat if valid else None,
            lon if valid else None,
            alt_m=_float(fields[8], "altitude") if valid else None,
            hdop=_float(fields[7], "hdop") if valid else None,
        )
    if kind == "RMC":
        if len(fields) < 11:
            raise NmeaError(f"RMC: {len(fields)} fields, expected 11 or more")
        status = fields[1]
        if status not in ("A", "V"):
            raise NmeaError(f"RMC: status must be A or V, got {status[:4]!r}")
        valid = status == "A"
        lat, lon = _position(fields, 2)
        if valid and lat is None:
            raise NmeaError("RMC: a fix without a position")
        return NmeaFix("RMC", valid, lat if valid else None, lon if valid else None, time=_utc(fields[0], fields[8]))
    return None


@dataclasses.dataclass(slots=True)
class NmeaReceiver:
    """The receiver's current fix, from the sentences seen so far (GGA and RMC complement each other)."""

    fix: LocationFix = LocationFix.NONE
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    accuracy_m: float | None = None
    time: float | None = None

    def feed(self, fix: NmeaFix) -> bool:
        """Take one sentence's content; returns True when it carried a valid position."""
        if not fix.valid:
            self.fix, self.lat, self.lon, self.alt_m, self.accuracy_m = LocationFix.NONE, None, None, None, None
            return False
        self.lat, self.lon = fix.lat, fix.lon
        if fix.kind == "GGA":
            self.alt_m = fix.alt_m
            self.accuracy_m = None if fix.hdop is None else fix.hdop * _UERE_M
            self.fix = LocationFix.FIX_3D if fix.alt_m is not None else LocationFix.FIX_2D
        elif self.fix is LocationFix.NONE:
            self.fix = LocationFix.FIX_2D
        if fix.time is not None:
            self.time = fix.time
        return True
