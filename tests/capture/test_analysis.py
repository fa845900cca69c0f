"""Analysis: exchanges, protocol recognition with the real JBD definition, replay export.

The JBD frames are the vendor document's 17S example from /work/shared/protocols/jbd.md ("General
Protocol V4"), split into 20-byte notifications as a JBD BLE module sends them.
"""

from __future__ import annotations

import pytest

from bmsgate.capture.analysis import analyze_capture
from bmsgate.capture.replayfile import format_replay, parse_replay
from bmsgate.protocols import get_protocol
from tests.capture.capturebuilders import (
    RECEIVED,
    SENT,
    T0,
    acl,
    att_characteristics,
    att_notification,
    att_read_by_group_type,
    att_write_command,
    att_write_request,
    btsnoop_h4,
    l2cap,
    le_connection_complete,
    split,
)

BASIC_17S = bytes.fromhex("DD03001F19DFF8240DA50FA00002249100000000000012570311040B980BA90B960B97F89A77")
CELLS_17S = bytes.fromhex("DD0400220EC80EC80ECB0ECF0ECA0EC70ECA0ECD0EC90ECA0ECB0ECB0EC80ECC0EC80EC90EC9F18777")
REQUEST_BASIC = bytes.fromhex("DDA50300FFFD77")
REQUEST_CELLS = bytes.fromhex("DDA50400FFFC77")
NOTIFY, WRITE, CCCD = 0x0011, 0x0015, 0x0012


def jbd_capture(*, polls: int = 2, discovery: bool = True) -> bytes:
    handle = 0x0040
    records = [(T0 - 1, RECEIVED, le_connection_complete(handle, "A4:C1:37:AA:BB:CC"))]
    if discovery:
        for request, response in (
            att_read_by_group_type([(0x0010, 0x0020, 0xFF00)]),
            att_characteristics([(0x0010, 0x10, NOTIFY, 0xFF01), (0x0014, 0x0C, WRITE, 0xFF02)]),
        ):
            records += [
                (T0 - 0.5, SENT, acl(handle, l2cap(request))),
                (T0 - 0.4, RECEIVED, acl(handle, l2cap(response))),
            ]
    records.append((T0 - 0.3, SENT, acl(handle, l2cap(att_write_request(CCCD, b"\x01\x00")))))
    t = T0
    for _ in range(polls):
        for request, reply in ((REQUEST_BASIC, BASIC_17S), (REQUEST_CELLS, CELLS_17S)):
            records.append((t, SENT, acl(handle, l2cap(att_write_command(WRITE, request)))))
            for chunk in split(reply):
                t += 0.02
                records.append((t, RECEIVED, acl(handle, l2cap(att_notification(NOTIFY, chunk)))))
            t += 0.2
        t += 1.0
    return btsnoop_h4(records)


def test_jbd_capture_is_recognised_and_decoded() -> None:
    report = analyze_capture(jbd_capture(), "jbd.log", [get_protocol("jbd")])
    best = report.best_match
    assert best is not None
    assert best.protocol == "jbd"
    assert best.frames == 4
    assert best.decoded == 2
    assert best.requests_seen == ("basic_info", "cell_voltages")
    assert best.gatt_match
    snapshot = best.polls[-1].snapshot
    assert snapshot is not None
    assert snapshot["voltage"] == pytest.approx(66.23)
    assert snapshot["current"] == pytest.approx(-20.12)
    assert snapshot["remaining_capacity"] == pytest.approx(34.93)
    assert snapshot["full_capacity"] == pytest.approx(40.0)
    assert snapshot["cycles"] == 2
    assert snapshot["soc"] == 87
    assert snapshot["device"]["production_date"] == "2018-04-17"
    assert snapshot["cell_count"] == 17
    # jbd.md's prose says 3.784 V, but cell 6 of the frame is 0x0EC7 = 3.783 V; the bytes win.
    assert snapshot["cell_min"] == pytest.approx(3.783)
    assert snapshot["cell_max"] == pytest.approx(3.791)
    assert snapshot["temperatures"] == pytest.approx([23.7, 25.4, 23.5, 23.6])
    assert snapshot["charge_enabled"] is True
    assert snapshot["discharge_enabled"] is True


def test_default_definitions_are_the_builtins() -> None:
    report = analyze_capture(jbd_capture(polls=1), "jbd.log")
    assert report.best_match is not None
    assert report.best_match.protocol == "jbd"


def test_frames_without_marker_or_checksum_are_not_read_from_another_characteristic() -> None:
    # Super-B frames are any 20-byte notification: JBD's 20-byte chunks on ff01 are not Super-B's.
    report = analyze_capture(jbd_capture(polls=1), "jbd.log", [get_protocol("superb")])
    assert report.best_match is None


def test_exchanges_pair_each_write_with_its_notifications_and_skip_the_cccd() -> None:
    report = analyze_capture(jbd_capture(polls=1), "jbd.log", [])
    assert [(e.request.value if e.request else None, e.response_bytes) for e in report.exchanges] == [
        (REQUEST_BASIC, BASIC_17S),
        (REQUEST_CELLS, CELLS_17S),
    ]
    assert [len(e.responses) for e in report.exchanges] == [2, 3]  # 36 = 20 + 16; 41 = 20 + 20 + 1
    assert report.matches == ()
    handles = {h.handle: h for h in report.handles}
    assert handles[CCCD].is_cccd
    assert handles[NOTIFY].notifications == 5
    assert handles[WRITE].writes == 2
    assert handles[WRITE].uuid == "0000ff02-0000-1000-8000-00805f9b34fb"


def test_cccd_is_guessed_without_discovery() -> None:
    report = analyze_capture(jbd_capture(polls=1, discovery=False), "jbd.log", [])
    assert len(report.exchanges) == 2
    assert {h.handle for h in report.handles if h.is_cccd} == {CCCD}


def test_report_json_shape() -> None:
    data = analyze_capture(jbd_capture(polls=1), "jbd.log").to_dict()
    assert data["protocol"] == "jbd"
    assert data["source"] == "jbd.log"
    assert data["connections"][0]["peer_address"] == "A4:C1:37:AA:BB:CC"
    assert data["exchanges"][0]["request"]["data"] == REQUEST_BASIC.hex()
    assert data["timeline"][0]["t"] == 0.0
    assert data["protocol_matches"][0]["polls"][0]["snapshot"]["voltage"] == pytest.approx(66.23)


def test_replay_export_round_trips_and_feeds_the_decoder() -> None:
    report = analyze_capture(jbd_capture(polls=1), "jbd.log")
    replay = report.to_replay()
    assert replay.protocol == "jbd"
    assert replay.source == "jbd.log"
    assert [r.direction for r in replay.records] == ["tx", "rx", "rx", "tx", "rx", "rx", "rx"]
    assert replay.records[0].t == 0.0
    assert parse_replay(format_replay(replay)) == replay
    assembler = get_protocol("jbd").new_assembler()
    frames = [frame for record in replay.chunks for frame in assembler.feed(record.data)]
    assert [frame.raw for frame in frames] == [BASIC_17S, CELLS_17S]


def test_undecodable_frames_report_the_error() -> None:
    # A valid-looking 0x03 frame (right length and checksum) too short for the basic-info fields.
    payload = bytes(4)
    body = bytes((0x00, len(payload))) + payload
    checksum = (0x10000 - sum(body)) & 0xFFFF
    frame = b"\xdd\x03" + body + checksum.to_bytes(2, "big") + b"\x77"
    records = [
        (T0, SENT, acl(1, l2cap(att_write_command(WRITE, REQUEST_BASIC)))),
        (T0 + 0.1, RECEIVED, acl(1, l2cap(att_notification(NOTIFY, frame)))),
    ]
    report = analyze_capture(btsnoop_h4(records), "short.log", [get_protocol("jbd")])
    (match,) = report.matches
    assert match.frames == 1
    assert match.decoded == 0
    assert match.polls[0].error is not None
    assert "payload bytes" in match.polls[0].error
    assert report.to_dict()["protocol"] is None
