"""ECO-WORTHY: one notification is one frame (``frame_per_chunk``), two frame types, unlock writes once."""

from __future__ import annotations

from typing import Any

import pytest

from bmsgate.errors import DefinitionError
from bmsgate.protocols import PollSession, SnapshotReady, Write, get_protocol
from bmsgate.protocols.definition import definition_from_mapping

from .family_frames import ECOWORTHY

PROTOCOL = get_protocol("ecoworthy")
STATUS = ECOWORTHY.replies["status"][0]
CELLS = ECOWORTHY.replies["cells"][0]


def test_each_chunk_is_checked_as_one_frame() -> None:
    assembler = PROTOCOL.new_assembler()
    assert [frame.key for frame in assembler.feed(STATUS) + assembler.feed(CELLS)] == [0xA1, 0xA2]
    assert assembler.buffered == 0


@pytest.mark.parametrize(
    ("chunk", "reason"),
    [
        (STATUS[:40], "checksum mismatch"),  # half a frame is no frame: nothing waits for the rest
        (STATUS[:-1] + bytes([STATUS[-1] ^ 1]), "checksum mismatch"),
        (b"\xa3" + STATUS[1:], "does not start with A1 or A2"),
        (STATUS[:5], "outside"),
    ],
)
def test_a_chunk_that_is_no_frame_is_dropped_with_the_reason(chunk: bytes, reason: str) -> None:
    assembler = PROTOCOL.new_assembler()
    assert assembler.feed(chunk) == []
    assert reason in (assembler.stats.last_error or "")
    assert assembler.stats.rejected == 1
    # The next whole frame is taken: nothing of the bad chunk was kept.
    assert [frame.key for frame in assembler.feed(CELLS)] == [0xA2]


def test_unlock_writes_go_once_per_connection_and_the_stream_is_read() -> None:
    session = PollSession(PROTOCOL, battery_id="x")
    session.connection_reset()
    actions = session.start_poll(0.0)
    writes = [action.data for action in actions if isinstance(action, Write)]
    assert [write[-2:] for write in writes] == [b"\x00\x2d", b"\x65\xef"]
    session.feed(STATUS, 0.5)
    session.tick(0.5)  # the runtime ticks at every WaitUntil deadline (here: the next request, at once)
    outcome = session.feed(CELLS, 0.6)
    assert isinstance(outcome[-1], SnapshotReady)
    assert outcome[-1].snapshot.voltage == pytest.approx(13.29)
    session.feed(STATUS, 9.5)
    session.feed(CELLS, 9.6)
    actions = session.start_poll(10.0)
    for _ in range(4):  # each streamed reply is taken from what arrived since the last poll, one tick each
        if isinstance(actions[-1], SnapshotReady):
            break
        actions += session.tick(10.0)
    assert not any(isinstance(action, Write) for action in actions)
    assert isinstance(actions[-1], SnapshotReady)
    session.connection_reset()
    assert sum(isinstance(action, Write) for action in session.start_poll(20.0)) == 2


def _definition(**framing: Any) -> dict[str, Any]:
    base = PROTOCOL.definition.model_dump(mode="json", exclude_none=True)
    data = {**base, "framing": {**base["framing"], **framing}}
    data.pop("requires", None)
    return data


@pytest.mark.parametrize(
    ("framing", "message"),
    [
        ({"length": {"offset": 1}}, "carry no 'length'"),
        ({"fixed_length": 84}, "carry no 'length'"),
        ({"frame_per_chunk": False}, "exactly one of .length. and .fixed_length."),
        ({"starts": ["A2", "A3"]}, "must include 'start'"),
        ({"text": "hex", "end": "0D"}, "for binary frames"),
    ],
)
def test_bad_chunk_framings_are_refused(framing: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        definition_from_mapping(_definition(**framing))
