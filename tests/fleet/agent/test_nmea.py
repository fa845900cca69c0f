"""NMEA sentences: real receiver lines, checksums, and a fuzz test where only NmeaError escapes."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsgate.fleet.agent.nmea import NmeaError, NmeaReceiver, parse_sentence, split_sentence
from bmsgate.fleet.protocol import LocationFix


def sentence(body: str) -> str:
    """A sentence with its checksum."""
    checksum = 0
    for char in body:
        checksum ^= ord(char)
    return f"${body}*{checksum:02X}"


GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"


def test_the_textbook_sentences() -> None:
    gga = parse_sentence(GGA)
    assert gga is not None
    assert gga.valid
    assert gga.lat == pytest.approx(48.1173)
    assert gga.lon == pytest.approx(11.516666, abs=1e-6)
    assert (gga.alt_m, gga.hdop) == (545.4, 0.9)
    rmc = parse_sentence(RMC)
    assert rmc is not None
    assert rmc.valid
    assert rmc.time is not None
    assert datetime.datetime.fromtimestamp(rmc.time, datetime.UTC).isoformat() == "1994-03-23T12:35:19+00:00"
    recent = parse_sentence(sentence("GPRMC,081500.50,A,3355.1234,S,01825.5000,E,0.0,0.0,011226,,,A"))
    assert recent is not None
    assert recent.time is not None
    assert datetime.datetime.fromtimestamp(recent.time, datetime.UTC).isoformat() == "2026-12-01T08:15:00.500000+00:00"


def test_southern_and_western_hemispheres_are_negative() -> None:
    fix = parse_sentence(sentence("GNGGA,101010.00,3355.1234,S,01825.5000,W,2,10,1.2,12.0,M,30.0,M,,"))
    assert fix is not None
    assert fix.lat == pytest.approx(-33.918723, abs=1e-6)
    assert fix.lon == pytest.approx(-18.425, abs=1e-6)


def test_no_fix_has_no_position() -> None:
    fix = parse_sentence(sentence("GPGGA,101010.00,,,,,0,00,99.9,,M,,M,,"))
    assert fix is not None
    assert not fix.valid
    assert fix.lat is None
    void = parse_sentence(sentence("GPRMC,101010.00,V,,,,,,,010126,,,N"))
    assert void is not None
    assert not void.valid


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (GGA[:-2] + "48", "checksum"),
        ("GPGGA,123519", "form"),
        (sentence("GPGGA,1,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), "hemisphere"),
        (sentence("GPGGA,1,9107.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), "range"),
        (sentence("GPGGA,1,4807.038,N,01131.000,E,1,08,0.9,nan,M,46.9,M,,"), "finite"),
        (sentence("GPGGA,1,,,,,1,08,0.9,545.4,M,46.9,M,,"), "without a position"),
        (sentence("GPRMC,123519,A,4807.038,N,01131.000,E,0,0,320394,,"), "range"),
        ("$" + "A" * 100, "longer"),
    ],
)
def test_bad_lines_say_why(line: str, reason: str) -> None:
    with pytest.raises(NmeaError, match=reason):
        parse_sentence(line)


def test_other_sentences_carry_no_position() -> None:
    assert parse_sentence(sentence("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00")) is None


def test_the_receiver_combines_gga_and_rmc_and_forgets_a_lost_fix() -> None:
    receiver = NmeaReceiver()
    rmc = parse_sentence(RMC)
    gga = parse_sentence(GGA)
    assert rmc is not None
    assert gga is not None
    assert receiver.feed(rmc)
    after_rmc = receiver.fix
    assert receiver.feed(gga)
    assert (after_rmc, receiver.fix) == (LocationFix.FIX_2D, LocationFix.FIX_3D)
    assert receiver.time == rmc.time
    assert receiver.accuracy_m == pytest.approx(4.5)
    lost = parse_sentence(sentence("GPGGA,101010.00,,,,,0,00,99.9,,M,,M,,"))
    assert lost is not None
    assert not receiver.feed(lost)
    assert (receiver.fix, receiver.lat) == (LocationFix.NONE, None)


_NMEA_ALPHABET = st.sampled_from([*list("$*,.0123456789ABCDEFGHNSEWMVPR-\r\n "), "GPGGA", "GPRMC", "GNRMC"])


@given(st.lists(_NMEA_ALPHABET, max_size=60).map("".join))
def test_fuzz_sentence_like_text_raises_only_nmea_error(text: str) -> None:
    try:
        parse_sentence(text)
    except NmeaError:
        pass


@given(st.text(max_size=120))
def test_fuzz_any_text_raises_only_nmea_error(text: str) -> None:
    try:
        parse_sentence(text)
    except NmeaError:
        pass


@given(
    st.sampled_from(["GPGGA", "GPRMC"]),
    st.lists(st.text(alphabet="0123456789.-NSEWAVM", max_size=12), min_size=0, max_size=16),
)
def test_fuzz_checksummed_fields_raise_only_nmea_error(kind: str, fields: list[str]) -> None:
    line = sentence(",".join([kind, *fields]))
    try:
        kind_read, _ = split_sentence(line)
        parse_sentence(line)
    except NmeaError:
        return
    assert kind_read == kind[2:]
