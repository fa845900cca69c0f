"""Frames in acknowledged pages (``framing.pages``, D-powercore): joined, acknowledged, bounded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DefinitionError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.pagedframing import PagedFrameAssembler, to_wire
from bmsgate.protocols.session import PollSession, SnapshotReady, WaitUntil, Write

from .family_frames import DPWRCORE

DPWRCORE_PROTOCOL = get_protocol("dpwrcore")
FRAMING = DPWRCORE_PROTOCOL.definition.framing
CELLS = DPWRCORE.replies["cells"][0]
REQUESTS = {request.name: request.frame for request in DPWRCORE_PROTOCOL.requests}
PAGES = [CELLS[start : start + 20] for start in range(0, len(CELLS), 20)]
CELLS_FRAME = bytes.fromhex(
    "3A050362001D0E0EA50EB10EA40EAF0EA60EAD0EA60EAF0EA60EAD0EA40EB30EA60EA80AA20D0A"
)  # the pages' data joined: 18 + 18 + 3 bytes
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_pages_data_is_one_checked_frame_and_every_page_is_acknowledged() -> None:
    assembler = PagedFrameAssembler(FRAMING)
    assert assembler.feed(PAGES[0]) == []
    assert assembler.feed(PAGES[1]) == []
    frames = assembler.feed(PAGES[2])
    assert [frame.raw for frame in frames] == [CELLS_FRAME]
    assert frames[0].key == 0x62
    # aiobmsble's acknowledgement: the page written back with bit 7 of its length byte set.
    assert assembler.take_acks() == [bytes([page[0] | 0x80]) + page[1:] for page in PAGES]
    assert assembler.take_acks() == []
    assert isinstance(DPWRCORE_PROTOCOL.new_assembler(), PagedFrameAssembler)


def test_joined_pages_in_one_chunk_read_as_separate_notifications() -> None:
    assembler = PagedFrameAssembler(FRAMING)
    assert [frame.raw for frame in assembler.feed(CELLS)] == [CELLS_FRAME]
    assert len(assembler.take_acks()) == 3


def test_the_packs_acknowledgement_of_a_request_is_ignored() -> None:
    request = DPWRCORE_PROTOCOL.wire(REQUESTS["cells"])
    echo = bytes([request[0] | 0x80]) + request[1:]
    assembler = PagedFrameAssembler(FRAMING)
    assert [frame.raw for frame in assembler.feed(echo + CELLS)] == [CELLS_FRAME]
    assert assembler.stats.junk_chunks == 1
    assert len(assembler.take_acks()) == 3  # the echo itself is not acknowledged


def test_requests_are_paged_as_aiobmsble_writes_them() -> None:
    # aiobmsble _cmd(0x60): [len + 2, 0x11] + 3A 03 05 60 00 00 <sum16 + 8> 0D 0A, zero-padded to 20 bytes.
    assert DPWRCORE_PROTOCOL.wire(REQUESTS["status"]) == bytes.fromhex("0C113A030560000000680D0A0000000000000000")


def test_a_simulated_reply_is_paged_with_data_lengths_only() -> None:
    assert DPWRCORE_PROTOCOL.wire_reply(CELLS_FRAME)[:2] == b"\x12\x13"
    assert to_wire(CELLS_FRAME, FRAMING, request=False)[40:45] == bytes.fromhex("0333A20D0A")
    assembler = PagedFrameAssembler(FRAMING)
    assert [frame.raw for frame in assembler.feed(DPWRCORE_PROTOCOL.wire_reply(CELLS_FRAME))] == [CELLS_FRAME]


@pytest.mark.parametrize(
    ("pages", "reason"),
    [
        ([PAGES[0], PAGES[2]], "without the pages before it"),
        ([PAGES[1]], "without the pages before it"),
        ([PAGES[0], PAGES[1][:19]], "not pages of 20"),
        ([b"\x13" + PAGES[0][1:]], "not a page of a frame"),
        ([PAGES[0][:1] + b"\x10" + PAGES[0][2:]], "not a page of a frame"),
        # aiobmsble's MockWrongCRCBleakClient 0x62: a wrong checksum in the last page.
        (
            [
                bytes.fromhex("12133A050362001D0E0ED70ED60ED60ED50ED50E"),
                bytes.fromhex("1223D60ED10ED20ED50ED60ED40ED80ED70EDB0E"),
                bytes.fromhex("0333080D0A000000000000000000000000000000"),
            ],
            "checksum",
        ),
        ([b"invalid_value"], "not pages of 20"),
    ],
    ids=["gap", "no_first", "short_page", "length_byte", "page_zero", "wrong_crc", "garbage"],
)
def test_a_bad_page_is_dropped_with_its_reason_and_the_next_frame_reads(pages: list[bytes], reason: str) -> None:
    assembler = PagedFrameAssembler(FRAMING)
    for page in pages:
        assert assembler.feed(page) == []
    assert assembler.stats.rejected >= 1
    assert reason in (assembler.stats.last_error or "")
    assert [frame.raw for frame in assembler.feed(CELLS)] == [CELLS_FRAME]


def test_a_new_first_page_drops_the_frame_begun_and_reset_forgets_it() -> None:
    assembler = PagedFrameAssembler(FRAMING)
    assembler.feed(PAGES[0])
    assembler.feed(PAGES[1])
    assert [frame.raw for frame in assembler.feed(CELLS)] == [CELLS_FRAME]
    assert assembler.stats.rejected == 1
    assembler.feed(PAGES[0])
    assert assembler.buffered == 18
    assembler.reset()
    assert assembler.buffered == 0
    assert assembler.take_acks() == []


def test_the_session_writes_each_acknowledgement_before_the_next_request() -> None:
    session = PollSession(DPWRCORE_PROTOCOL, battery_id="pack")
    actions = session.start_poll(0.0, epoch=0.0)
    writes = [action.data for action in actions if isinstance(action, Write)]
    assert writes == [DPWRCORE_PROTOCOL.wire(REQUESTS["status"])]
    status = DPWRCORE.replies["status"][0]
    actions = session.feed(status[:20], 0.1)
    assert actions[0] == Write(bytes([0x92]) + status[1:20])
    assert isinstance(actions[-1], WaitUntil)
    actions = session.feed(status[20:], 0.2)
    assert actions[0] == Write(bytes([0x82]) + status[21:40])
    assert actions[-2] == Write(DPWRCORE_PROTOCOL.wire(REQUESTS["counters"]))
    for at, reply in ((0.3, DPWRCORE.replies["counters"][0]), (0.4, CELLS)):
        for start in range(0, len(reply), 20):
            actions = session.feed(reply[start : start + 20], at)
    assert isinstance(actions[-1], SnapshotReady)
    assert actions[-1].snapshot.cell_count == 14


def _definition(framing: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": "paged-test",
        "title": "paged test",
        "requires": ["pages", *framing.pop("requires", [])],
        "gatt": {"profiles": [{"service": "ff00", "notify": "ff01", "write": "ff02"}]},
        "match": [{"local_name": "X*"}],
        "framing": {"start": "3A", "key": {"offset": 1}, "length": {"offset": 2, "add": 3}, **framing},
        "requests": [{"name": "read", "frame": "3A 01 00", "reply": 1}],
        "replies": {1: {"name": "read", "fields": [{"target": "soc", "at": 0, "type": "u8"}]}},
    }


@pytest.mark.parametrize(
    "framing",
    [
        {"pages": {"size": 20}, "max_length": 400},
        {"pages": {"size": 20}, "max_length": 200, "text": "hex", "end": "7E", "requires": ["text"]},
        {"pages": {"size": 300, "request_length_add": 2}, "max_length": 200},
        {"pages": {"size": 20, "ack_flag": 0x10}, "max_length": 200},
    ],
    ids=["too_long", "hex_text", "length_byte", "flag_in_length"],
)
def test_the_definition_refuses_pages_where_they_cannot_work(framing: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError, match="'pages'"):
        definition_from_mapping(_definition(framing))


def test_a_minimal_paged_definition_declares_the_construct() -> None:
    definition = definition_from_mapping(_definition({"pages": {"size": 20}, "max_length": 200}))
    assert "pages" in (definition.requires or [])


@given(
    data=st.lists(
        st.binary(max_size=60)
        | st.sampled_from([*PAGES, CELLS, b"\x92" + PAGES[0][1:], bytes(20), b"\x12\xff" + bytes(18)])
        | st.binary(min_size=20, max_size=20),
        max_size=40,
    )
)
@FUZZ
def test_fuzz_pages_raise_only_our_errors_and_stay_bounded(data: list[bytes]) -> None:
    assembler = DPWRCORE_PROTOCOL.new_assembler()
    assert isinstance(assembler, PagedFrameAssembler)
    for chunk in data:
        for frame in assembler.feed(chunk):
            try:
                DPWRCORE_PROTOCOL.decode([frame], timestamp=0.0)
            except BmsgateError:
                pass
        assert assembler.buffered <= 15 * 18
        assert len(assembler.take_acks()) <= 15 * max(1, len(chunk) // 20)
