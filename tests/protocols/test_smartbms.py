"""123\\SmartBMS (``smartbms``) and its engine-6 constructs: an unmarked stream, rotating cells, sign characters."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DefinitionError, DeviceTimeout
from bmsgate.protocols import get_protocol
from bmsgate.protocols.constructs import CONSTRUCTS, ENGINE_VERSION, constructs_used
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.session import GiveUp, PollSession, SessionTiming, SnapshotReady, WaitUntil, Write
from bmsgate.protocols.unmarkedstream import UnmarkedStreamAssembler

from .family_frames import SMARTBMS

PROTOCOL = get_protocol("smartbms")
FRAMING = PROTOCOL.definition.framing
CELL_FRAMES = SMARTBMS.replies["status"]
"""The 16 frames of aiobmsble's test stream as sent (58 bytes each, cell n in frame n)."""
STREAM = b"".join(CELL_FRAMES)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _with_sum(frame: bytes | bytearray) -> bytes:
    body = bytes(frame[:57])
    return body + bytes([sum(body) & 0xFF])


def _changed(frame: bytes, at: int, value: int) -> bytes:
    edited = bytearray(frame)
    edited[at] = value
    return _with_sum(edited)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


# -- the stream: frames found by their checksum -----------------------------------------------------------


def test_the_protocol_uses_the_stream_assembler() -> None:
    assert isinstance(PROTOCOL.new_assembler(), UnmarkedStreamAssembler)


@pytest.mark.parametrize("size", [1, 20, 57, 58, 70, 244, len(STREAM)])
def test_a_stream_cut_anywhere_gives_every_frame_with_the_marker_in_front(size: int) -> None:
    assembler = UnmarkedStreamAssembler(FRAMING)
    frames = [frame for chunk in _chunks(STREAM, size) for frame in assembler.feed(chunk)]
    assert [frame.raw for frame in frames] == [b"S" + frame for frame in CELL_FRAMES]
    assert {frame.key for frame in frames} == {0x53}
    assert (assembler.stats.frames, assembler.stats.rejected, assembler.stats.noise_bytes) == (16, 0, 0)
    assert assembler.buffered == 0


def test_a_stream_joined_mid_frame_is_found_again_from_two_whole_frames() -> None:
    assembler = UnmarkedStreamAssembler(FRAMING)
    frames = [frame for chunk in _chunks(STREAM[23:], 20) for frame in assembler.feed(chunk)]
    # The cut first frame is noise; the second is taken once the third confirms it.
    assert [frame.raw[1:] for frame in frames] == CELL_FRAMES[1:]
    assert assembler.stats.rejected == 1
    assert assembler.stats.noise_bytes == 58 - 23
    assert "checksum" in (assembler.stats.last_error or "")


def test_a_window_found_by_searching_waits_for_the_frame_behind_it() -> None:
    assembler = UnmarkedStreamAssembler(FRAMING)
    assert assembler.feed(b"\x00" + CELL_FRAMES[0]) == []  # found at 1, but nothing behind it yet
    assert assembler.buffered == 58
    (first, second) = assembler.feed(CELL_FRAMES[1])
    assert (first.raw[1:], second.raw[1:]) == (CELL_FRAMES[0], CELL_FRAMES[1])
    (third,) = assembler.feed(CELL_FRAMES[2])  # in step again: taken at once
    assert third.raw[1:] == CELL_FRAMES[2]


def test_a_chance_checksum_while_searching_is_not_a_frame() -> None:
    # 58 bytes whose last byte is their sum, followed by a real frame that does not start right behind them.
    chance = _with_sum(bytes(range(100, 158)))
    assembler = UnmarkedStreamAssembler(FRAMING)
    frames = assembler.feed(b"\x01" + chance + b"\x02\x03" + CELL_FRAMES[0] + CELL_FRAMES[1])
    assert [frame.raw[1:] for frame in frames] == [CELL_FRAMES[0], CELL_FRAMES[1]]


def test_a_corrupt_frame_in_the_stream_costs_that_frame_only() -> None:
    corrupt = bytearray(CELL_FRAMES[3])
    corrupt[10] ^= 0x01
    stream = b"".join([*CELL_FRAMES[:3], bytes(corrupt), *CELL_FRAMES[4:]])
    assembler = UnmarkedStreamAssembler(FRAMING)
    frames = [frame for chunk in _chunks(stream, 20) for frame in assembler.feed(chunk)]
    assert [frame.raw[1:] for frame in frames] == CELL_FRAMES[:3] + CELL_FRAMES[4:]
    assert assembler.stats.rejected == 1


def test_reset_forgets_the_buffer_and_starts_in_step() -> None:
    assembler = UnmarkedStreamAssembler(FRAMING)
    assembler.feed(b"\x00" + CELL_FRAMES[0][:30])
    assembler.reset()
    assert assembler.buffered == 0
    (frame,) = assembler.feed(CELL_FRAMES[5])
    assert frame.raw[1:] == CELL_FRAMES[5]


def test_the_wire_form_leaves_the_marker_out() -> None:
    assert PROTOCOL.wire(b"S" + CELL_FRAMES[0]) == CELL_FRAMES[0]
    assert PROTOCOL.wire(b"") == b""


@given(
    chunks=st.lists(
        st.binary(max_size=80) | st.sampled_from(CELL_FRAMES) | st.sampled_from([frame[:29] for frame in CELL_FRAMES]),
        max_size=40,
    )
)
@FUZZ
def test_fuzz_the_stream_gives_only_checked_frames_in_bounded_memory(chunks: list[bytes]) -> None:
    assembler = PROTOCOL.new_assembler()
    for chunk in chunks:
        for frame in assembler.feed(chunk):
            assert len(frame.raw) == 59
            assert frame.raw[0] == 0x53
            assert sum(frame.raw[1:58]) & 0xFF == frame.raw[58]
        assert assembler.buffered < 2 * 58 + len(chunk)


# -- fields: the sign character ------------------------------------------------------------------------------


def _poll_with(at: int, value: int) -> list[bytes]:
    return [b"S" + _changed(frame, at, value) for frame in CELL_FRAMES]


def test_the_stream_decodes_to_the_values_aiobmsble_states() -> None:
    snapshot = PROTOCOL.decode([b"S" + frame for frame in CELL_FRAMES], timestamp=0.0)
    assert snapshot.voltage == 335.355
    assert snapshot.current == 8.0
    assert snapshot.soc == 75
    assert snapshot.cell_voltages == tuple((0x0270 + number - 1) / 200 for number in range(1, 17))
    assert snapshot.temperatures == (20.0,) * 16
    assert (snapshot.charge_enabled, snapshot.discharge_enabled) == (True, True)
    assert snapshot.alarms == frozenset()


@pytest.mark.parametrize(("sign", "current"), [(b"+", 8.0), (b"-", -8.0), (b"X", None), (b"?", None)])
def test_the_current_sign_character(sign: bytes, current: float | None) -> None:
    # aiobmsble test_current_signs: '-' → -8.0 A; 'X' (unknown) → no value here (aiobmsble reports 0).
    snapshot = PROTOCOL.decode(_poll_with(9, sign[0]), timestamp=0.0)
    assert snapshot.current == current


@pytest.mark.parametrize(
    ("status", "alarms"),
    [
        (0x03, set()),
        (0x2C, {"internal_communication_fault", "system_fault"}),  # aiobmsble: problem code 0x0B
        (0x04, {"internal_communication_fault"}),
        (0x83, set()),
    ],
)
def test_status_byte_1(status: int, alarms: set[str]) -> None:
    snapshot = PROTOCOL.decode(_poll_with(30, status), timestamp=0.0)
    assert {alarm.value for alarm in snapshot.alarms} == alarms
    assert snapshot.charge_enabled is bool(status & 0x01)
    assert snapshot.extras["soc_not_calibrated"] is bool(status & 0x80)


def test_a_frame_numbered_outside_the_cells_is_refused_when_decoded_directly() -> None:
    with pytest.raises(BmsgateError, match="below"):
        PROTOCOL.decode([b"S" + _changed(CELL_FRAMES[0], 24, 0)], timestamp=0.0)


def _field_definition(field: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": "sign-test",
        "title": "sign test",
        "gatt": {"profiles": [{"service": "ff00", "notify": "ff01", "write": "ff02"}]},
        "match": [{"local_name": "X*"}],
        "framing": {"start": "AA", "fixed_length": 8, "key": {"offset": 1}, "payload_offset": 2},
        "requests": [{"name": "read", "frame": "AA 01", "reply": 1}],
        "replies": {1: {"name": "read", "fields": [{"target": "current", "at": 0, **field}]}},
    }


def test_sign_char_is_an_engine_6_construct_that_round_trips() -> None:
    assert ENGINE_VERSION >= 6
    assert {"sign_char", "rotation", "unmarked_stream"} <= set(CONSTRUCTS)
    definition = definition_from_mapping(
        _field_definition({"type": "u24", "sign_char": {"positive": [0x2B], "negative": [0x2D]}, "scale": 0.125})
    )
    assert "sign_char" in constructs_used(definition)
    from bmsgate.protocols import CompiledProtocol

    protocol = CompiledProtocol(definition)
    for current in (-8.0, 0.0, 3.125, 8191.875):
        frame = protocol.encode_reply(1, {"current": current})
        assert frame[2] == (0x2D if current < 0 else 0x2B)
        assert protocol.decode([frame], timestamp=0.0).current == current


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ({"type": "u8", "sign_char": {}}, "sign_char"),
        ({"type": "s16", "sign_char": {}}, "sign_char"),
        ({"type": "u16", "bit": 3, "sign_char": {}}, "sign_char"),
        ({"target": "extras.currents", "type": "u16", "count": 2, "sign_char": {}}, "sign_char"),
        ({"type": "u16", "sign_char": {"positive": [0x2B], "negative": [0x2B]}}, "distinct"),
        ({"type": "u16", "sign_char": {"positive": [256]}}, "distinct"),
    ],
)
def test_sign_char_is_validated(field: dict[str, Any], reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        definition_from_mapping(_field_definition(field))


@given(raw=st.binary(min_size=58, max_size=58))
@FUZZ
def test_fuzz_any_checked_frame_decodes_or_raises_our_error(raw: bytes) -> None:
    frames = [b"S" + _changed(_with_sum(raw), 24, number) for number in range(1, 17)]
    try:
        snapshot = PROTOCOL.decode(frames, timestamp=0.0)
    except BmsgateError:
        return
    assert snapshot.current is None or math.isfinite(snapshot.current)


def test_the_stream_framing_needs_a_checksum() -> None:
    data = _field_definition({"type": "u8"})
    data["framing"] = {"start": "53", "marker_on_wire": False, "fixed_length": 9, "key": {"offset": 0}}
    with pytest.raises(DefinitionError, match="checksum"):
        definition_from_mapping(data)


# -- the session: a rotation kept per connection --------------------------------------------------------------


def _run(session: PollSession, actions: list[Any], now: float) -> list[Any]:
    """What the runtime does with a deadline already reached: tick."""
    while actions and isinstance(actions[-1], WaitUntil) and actions[-1].deadline <= now:
        actions = session.tick(now)
    return actions


def _feed_all(session: PollSession, frames: list[bytes], start: float) -> tuple[float, list[Any]]:
    now = start
    actions: list[Any] = []
    for frame in frames:
        for chunk in _chunks(frame, 20):
            now += 0.02
            actions = _run(session, session.feed(chunk, now), now)
            if any(isinstance(action, SnapshotReady | GiveUp) for action in actions):
                return now, actions
    return now, actions


def test_the_first_poll_waits_for_a_whole_rotation_and_writes_nothing() -> None:
    session = PollSession(PROTOCOL)
    actions = session.start_poll(0.0)
    assert not any(isinstance(action, Write) for action in actions)
    assert isinstance(actions[-1], WaitUntil)
    assert isinstance(session.tick(0.0)[-1], WaitUntil)  # nothing had arrived: wait for the rotation
    rotation = CELL_FRAMES[6:] + CELL_FRAMES[:6]  # joined mid-rotation
    _, actions = _feed_all(session, rotation, 0.0)
    (ready,) = actions
    assert isinstance(ready, SnapshotReady)
    assert ready.snapshot.cell_voltages == tuple((0x0270 + number - 1) / 200 for number in range(1, 17))
    assert len(ready.frames) == 16


def test_later_polls_are_answered_at_once_from_the_kept_frames_the_newest_of_each_number() -> None:
    session = PollSession(PROTOCOL)
    session.start_poll(0.0)
    now, _ = _feed_all(session, CELL_FRAMES, 0.0)
    # While idle the rotation goes on: cell 5 changes, and the pack voltage with it.
    changed = _changed(_changed(CELL_FRAMES[4], 27, 0x90), 2, 0x00)
    now, _ = _feed_all(session, [changed], now)
    (ready,) = _run(session, session.start_poll(now), now)
    assert isinstance(ready, SnapshotReady)
    assert ready.snapshot.cell_voltages[4] == (0x0290 / 200)
    assert ready.snapshot.voltage == 0x010500 * 0.005  # the newest frame's pack values


def test_a_poll_first_takes_the_frames_that_waited_in_the_link() -> None:
    # The runtime hands over what arrived between polls only once the poll began: the poll must not answer
    # from the kept rotation before it has seen them.
    session = PollSession(PROTOCOL)
    session.start_poll(0.0)
    now, _ = _feed_all(session, CELL_FRAMES, 0.0)
    changed = _changed(CELL_FRAMES[4], 27, 0x90)
    actions = session.start_poll(now + 5.0)
    assert isinstance(actions[-1], WaitUntil)
    assert actions[-1].deadline == now + 5.0  # feed what is there, then tick
    for chunk in _chunks(changed, 20):
        actions = session.feed(chunk, now + 5.0)
    (ready,) = _run(session, actions, now + 5.0)
    assert isinstance(ready, SnapshotReady)
    assert ready.snapshot.cell_voltages[4] == (0x0290 / 200)


def test_a_rotation_that_stopped_is_not_presented_as_current() -> None:
    # The kept frames answered every later poll, with a new timestamp, after the BMS went silent.
    session = PollSession(PROTOCOL, timing=SessionTiming(retries=0))
    session.start_poll(0.0)
    now, actions = _feed_all(session, CELL_FRAMES, 0.0)
    assert isinstance(actions[-1], SnapshotReady)
    later = now + 600.0
    actions = _run(session, session.start_poll(later), later)
    assert isinstance(actions[-1], WaitUntil)
    (give_up,) = session.tick(later + 3.1)
    assert isinstance(give_up, GiveUp)
    assert isinstance(give_up.error, DeviceTimeout)


def test_a_cell_whose_frames_stopped_makes_the_rotation_incomplete() -> None:
    session = PollSession(PROTOCOL, timing=SessionTiming(retries=0, poll_deadline=1000.0))
    session.start_poll(0.0)
    now, actions = _feed_all(session, CELL_FRAMES, 0.0)
    assert isinstance(actions[-1], SnapshotReady)
    without_cell_8 = CELL_FRAMES[:7] + CELL_FRAMES[8:]
    for _ in range(3):  # cell 8's frame is now three rotations old
        now, actions = _feed_all(session, without_cell_8, now)
    actions = _run(session, session.start_poll(now), now)
    assert isinstance(actions[-1], WaitUntil)
    now, actions = _feed_all(session, [CELL_FRAMES[7]], now)
    assert isinstance(actions[-1], SnapshotReady)


def test_a_rotating_request_is_written_with_the_wire_key_like_every_other_write() -> None:
    # The rotation's request was written in the clear while its replies were descrambled with the key.
    from bmsgate.protocols import CompiledProtocol
    from bmsgate.protocols.wirekey import wire_key, xor_bytes

    data = PROTOCOL.definition.model_dump(mode="json", exclude_none=True)
    data.pop("requires", None)
    spec = get_protocol("ogt").definition.framing.wire_key
    assert spec is not None
    data["framing"]["wire_key"] = spec.model_dump(mode="json")
    data["requests"][0]["frame"] = "AA 55"
    protocol = CompiledProtocol(definition_from_mapping(data))
    session = PollSession(protocol, device_name="SmartBat-A12345")
    key = wire_key("SmartBat-A12345", spec)
    assert key
    writes = [action.data for action in session.start_poll(0.0) if isinstance(action, Write)]
    assert writes == [xor_bytes(protocol.wire(bytes.fromhex("AA55")), key)]


def test_frames_numbered_beyond_the_count_do_not_make_the_cells_look_stale() -> None:
    # A stream that also rotates through numbers beyond the count (a cell since removed): each cell's frame
    # comes once per 16 frames, which is still current however few cells the count names.
    session = PollSession(PROTOCOL, timing=SessionTiming(retries=0, poll_deadline=1000.0))
    four_cells = [_changed(_changed(CELL_FRAMES[0], 24, number), 25, 4) for number in range(1, 17)]
    session.start_poll(0.0)
    now, actions = _feed_all(session, four_cells, 0.0)
    for _ in range(3):
        assert isinstance(actions[-1], SnapshotReady)
        assert len(actions[-1].snapshot.cell_voltages) == 4
        now, _ = _feed_all(session, four_cells, now)
        actions = _run(session, session.start_poll(now), now)
    assert isinstance(actions[-1], SnapshotReady)


def test_a_lost_cell_keeps_the_poll_waiting_until_its_frame_comes() -> None:
    session = PollSession(PROTOCOL)
    session.start_poll(0.0)
    now, actions = _feed_all(session, CELL_FRAMES[:7] + CELL_FRAMES[8:], 0.0)
    assert isinstance(actions[-1], WaitUntil)
    now, actions = _feed_all(session, [CELL_FRAMES[7]], now)
    assert isinstance(actions[-1], SnapshotReady)


def test_frames_numbered_outside_the_count_stay_out_of_the_poll() -> None:
    session = PollSession(PROTOCOL)
    session.start_poll(0.0)
    strays = [_changed(CELL_FRAMES[0], 24, 0), _changed(CELL_FRAMES[0], 24, 17)]
    _, actions = _feed_all(session, [*strays, *CELL_FRAMES], 0.0)
    (ready,) = actions
    assert isinstance(ready, SnapshotReady)
    assert len(ready.frames) == 16


def test_a_silent_rotation_times_out_and_a_new_connection_starts_over() -> None:
    timing = SessionTiming(retries=0, poll_deadline=30.0)
    session = PollSession(PROTOCOL, timing=timing)
    session.start_poll(0.0)
    now, _ = _feed_all(session, CELL_FRAMES[:5], 0.0)
    assert isinstance(session.tick(now + 2.9)[-1], WaitUntil)  # the request's timeout (3 s) from the last frame
    (give_up,) = session.tick(now + 3.1)
    assert isinstance(give_up, GiveUp)
    assert isinstance(give_up.error, DeviceTimeout)
    session.connection_reset()
    session.start_poll(10.0)
    _, actions = _feed_all(session, CELL_FRAMES[5:], 10.0)
    assert isinstance(actions[-1], WaitUntil)  # cells 1-5 were forgotten with the connection


@given(frames=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 40)), max_size=120))
@FUZZ
def test_fuzz_rotating_frames_keep_the_session_bounded_and_whole(frames: list[tuple[int, int]]) -> None:
    session = PollSession(PROTOCOL, timing=SessionTiming(retries=0, poll_deadline=1000.0))
    actions = session.start_poll(0.0)
    now = 0.0
    for number, count in frames:
        now += 0.01
        frame = _changed(_changed(CELL_FRAMES[0], 24, number), 25, count)
        actions = session.feed(frame, now)
        assert len(session._rotation.frames) <= 256
        actions = _run(session, actions, now)
        if isinstance(actions[-1], SnapshotReady):
            snapshot = actions[-1].snapshot
            assert len(snapshot.cell_voltages) == count
            actions = session.start_poll(now)
        elif isinstance(actions[-1], GiveUp):
            assert isinstance(actions[-1].error, BmsgateError)
            actions = session.start_poll(now)
