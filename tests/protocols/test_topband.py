"""Topband: a frame-type byte in front of fixed-length hex text (``starts``), garbage between, nothing written."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import DefinitionError
from bmsgate.protocols import PollSession, SnapshotReady, WaitUntil, Write, get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.textframing import to_wire

from .family_frames import PWRXTREME, TOPBAND, TOPBAND_KILOVAULT, TOPBAND_STARTCRAFT

TOPBAND_PROTOCOL = get_protocol("topband")
ECTIVE = TOPBAND.replies["status"][0]
STARTCRAFT = TOPBAND_STARTCRAFT.replies["status"][0]
KILOVAULT = TOPBAND_KILOVAULT.replies["status"][0]


def test_each_frame_type_starts_a_frame_and_the_garbage_around_it_is_noise() -> None:
    assembler = TOPBAND_PROTOCOL.new_assembler()
    frames = assembler.feed(ECTIVE + STARTCRAFT + KILOVAULT)
    assert [frame.raw[:1] for frame in frames] == [b"\x5e", b"\x83", b"\xb0"]
    assert all(len(frame.raw) == 57 for frame in frames)
    assert assembler.stats.rejected == 0
    # Ective's "6F2\0" in front and 25 bytes after it, StartCraft's and KiloVault's 8-byte tails.
    assert assembler.stats.noise_bytes == 4 + 25 + 8 + 8
    # The wire form is the type byte and the upper-case hex of the rest.
    assert to_wire(frames[1].raw, TOPBAND_PROTOCOL.definition.framing) == STARTCRAFT[:113]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60))
def test_any_chunking_gives_the_same_frames(sizes: list[int]) -> None:
    wire = ECTIVE + STARTCRAFT + KILOVAULT
    assembler = TOPBAND_PROTOCOL.new_assembler()
    frames, position, index = [], 0, 0
    while position < len(wire):
        size = sizes[index % len(sizes)]
        frames += assembler.feed(wire[position : position + size])
        position, index = position + size, index + 1
    assert [frame.raw[:1] for frame in frames] == [b"\x5e", b"\x83", b"\xb0"]


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x5a" + KILOVAULT[1:], None),  # 5A is no frame type: all of it is noise
        (KILOVAULT[:60], None),  # the rest has not come yet: waits
        (KILOVAULT[:112].replace(b"7B", b"7C") + b"A", "checksum mismatch"),
        (KILOVAULT[:40] + b"x" + KILOVAULT[41:], "not hex text"),
    ],
)
def test_bad_frames_are_refused_with_the_reason(wire: bytes, reason: str | None) -> None:
    assembler = TOPBAND_PROTOCOL.new_assembler()
    assert assembler.feed(wire) == []
    if reason is None:
        assert assembler.stats.rejected == 0
    else:
        assert reason in (assembler.stats.last_error or "")


def test_a_frame_cut_by_the_next_frame_type_is_dropped_and_the_next_kept() -> None:
    assembler = TOPBAND_PROTOCOL.new_assembler()
    frames = assembler.feed(STARTCRAFT[:70] + KILOVAULT)
    assert [frame.raw[:1] for frame in frames] == [b"\xb0"]
    assert assembler.stats.rejected == 1


def test_the_checker_names_every_frame_type() -> None:
    with pytest.raises(Exception, match="5E or 83 or B0 or E8"):
        TOPBAND_PROTOCOL.check_frame(b"\x00" * 57)


def test_the_alias_decodes_with_the_topband_definition() -> None:
    # The same definition (a test elsewhere may have installed another catalog instance meanwhile).
    alias = get_protocol("pwrxtreme")
    assert (alias.name, alias.definition.sha256) == ("topband", TOPBAND_PROTOCOL.definition.sha256)
    (frame,) = TOPBAND_PROTOCOL.new_assembler().feed(PWRXTREME.replies["status"][0])
    assert TOPBAND_PROTOCOL.decode([frame], battery_id="x", timestamp=0.0).voltage == pytest.approx(13.507)


def test_listening_writes_nothing_and_takes_the_next_frame() -> None:
    session = PollSession(TOPBAND_PROTOCOL, battery_id="x")
    session.connection_reset()
    actions = session.start_poll(0.0)
    assert not any(isinstance(action, Write) for action in actions)
    assert isinstance(actions[-1], WaitUntil)
    outcome = session.feed(ECTIVE, 0.5)
    assert isinstance(outcome[-1], SnapshotReady)
    assert outcome[-1].snapshot.current == pytest.approx(-12.808)
    # The next poll takes the newest frame that streamed in since, without writing.
    session.feed(STARTCRAFT, 5.0)
    actions = session.start_poll(10.0)
    actions += session.tick(10.0)
    assert not any(isinstance(action, Write) for action in actions)
    assert isinstance(actions[-1], SnapshotReady)
    assert actions[-1].snapshot.voltage == pytest.approx(13.41)


def _topband(**framing: Any) -> dict[str, Any]:
    base = TOPBAND_PROTOCOL.definition.model_dump(mode="json", exclude_none=True)
    data = {**base, "framing": {**base["framing"], **framing}}
    data.pop("requires", None)
    return data


@pytest.mark.parametrize(
    ("framing", "message"),
    [
        ({"fixed_length": None, "min_length": 1}, "needs an end marker or a fixed_length"),
        ({"starts": ["83", "B0"]}, "must include 'start'"),
        ({"starts": ["5E", "83B0"]}, "the length of 'start'"),
        ({"starts": ["5E", "41"]}, "needs a byte that is no hex digit"),
    ],
)
def test_bad_start_markers_are_refused(framing: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        definition_from_mapping(_topband(**framing))


def test_starts_need_hex_text_framing() -> None:
    data = _topband()
    data["framing"].pop("text")
    with pytest.raises(DefinitionError, match="'starts' and 'strip_bytes' need hex-text framing"):
        definition_from_mapping(data)


def test_an_empty_request_frame_must_listen_to_a_stream() -> None:
    data = _topband()
    data["requests"] = [{"name": "status", "frame": "", "reply": 0x5E}]
    with pytest.raises(DefinitionError, match="needs streaming: true"):
        definition_from_mapping(data)


def test_listen_and_starts_are_constructs_the_file_must_declare() -> None:
    assert {"listen", "starts", "text", "aliases"} <= set(TOPBAND_PROTOCOL.definition.requires or [])
    data = _topband()
    data["requires"] = [name for name in TOPBAND_PROTOCOL.definition.requires or [] if name != "listen"]
    with pytest.raises(DefinitionError, match="uses listen"):
        definition_from_mapping(data)
