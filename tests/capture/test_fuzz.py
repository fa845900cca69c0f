"""Fuzzing the readers: random bytes and mutated valid files may only ever raise CaptureError."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.capture.analysis import analyze_timeline
from bmsgate.capture.timeline import read_capture
from bmsgate.errors import CaptureError
from tests.capture.capturebuilders import (
    T0,
    acl,
    att_notification,
    att_write_command,
    l2cap,
    ll_data,
    pcap,
    pcapng_interface,
    pcapng_packet,
    pcapng_section,
    phdr,
)
from tests.capture.test_analysis import jbd_capture
from tests.capture.test_readers import nordic_session

_H4_SENT = b"\x00\x00\x00\x00" + acl(1, l2cap(att_write_command(0x15, b"\xdd\xa5\x03\x00\xff\xfd\x77")))
_H4_RECEIVED = b"\x00\x00\x00\x01" + acl(1, l2cap(att_notification(0x11, bytes(range(24)))))

VALID_FILES = {
    "btsnoop": jbd_capture(polls=1),
    "pcap": pcap(201, [(T0, _H4_SENT), (T0 + 1, _H4_RECEIVED)], big_endian=True),
    "pcapng": pcapng_section()
    + pcapng_interface(201, tsresol=9)
    + pcapng_packet(0, T0, _H4_SENT, units=10**9)
    + pcapng_packet(0, T0 + 1, _H4_RECEIVED, units=10**9),
    "nordic": nordic_session(),
    "phdr": pcap(256, [(T0, phdr(ll_data(0x1234, 0b10, l2cap(att_notification(1, b"x"))), pdu_type=3))]),
}

PREFIXES = st.sampled_from([b"", b"btsnoop\x00", b"\x0a\x0d\x0d\x0a", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d"])


def _read_all(data: bytes) -> None:
    with contextlib.suppress(CaptureError):
        analyze_timeline(read_capture(data, source="fuzz"), [])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PREFIXES, st.binary(max_size=400))
def test_random_bytes_raise_only_capture_error(prefix: bytes, tail: bytes) -> None:
    _read_all(prefix + tail)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID_FILES)), st.data())
def test_mutated_valid_files_raise_only_capture_error(name: str, data: st.DataObject) -> None:
    raw = bytearray(VALID_FILES[name])
    for _ in range(data.draw(st.integers(1, 6))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        index = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if action == "flip" and raw:
            raw[index] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[index : index + data.draw(st.integers(1, 8))]
        else:
            raw[index:index] = data.draw(st.binary(min_size=1, max_size=8))
    _read_all(bytes(raw))


def test_every_valid_fuzz_seed_reads_cleanly() -> None:
    for name, raw in VALID_FILES.items():
        timeline = read_capture(raw, source=name)
        assert timeline.events, name
