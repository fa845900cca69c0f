"""PollSession without asyncio: every rule of a poll, driven by explicit clock values.

Frames: the captured JBD-SP04S034 4S pack (see test_jbd.py), Daly A5 frames built from the documented layout
(test_daly.py), and simulator-encoded JK frames (`VirtualBms`, deterministic for a fixed pack).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DecodeError, DeviceTimeout, FrameError, ProtocolError
from bmsgate.protocols import (
    Action,
    CompiledProtocol,
    DiscardPending,
    GiveUp,
    PollSession,
    ReplyReady,
    SessionTiming,
    SnapshotReady,
    WaitUntil,
    Write,
    get_protocol,
)
from bmsgate.protocols.definition import RequestSpec
from bmsgate.runtime.simulation import PackConfig, PackModel, VirtualBms

from .test_daly import a5_poll
from .test_jbd import CAPTURE_4S_BASIC, CAPTURE_4S_CELLS
from .test_jbd import _frame as jbd_frame

JBD = get_protocol("jbd")
JK = get_protocol("jk")
A5 = get_protocol("daly-a5")
BASIC = bytes.fromhex(CAPTURE_4S_BASIC)
CELLS = bytes.fromhex(CAPTURE_4S_CELLS)
HARDWARE = jbd_frame(0x05, b"JBD-SP04S034-L4S-200A-B-U")
ACK = jbd_frame(0xE1, b"")
TIMING = SessionTiming(request_timeout=2.0, retries=2, retry_backoff=0.2, poll_deadline=15.0)
REQUESTS = {request.name: request.frame for request in JBD.requests}


def _session(protocol: CompiledProtocol = JBD, **timing: Any) -> PollSession:
    return PollSession(protocol, battery_id="house", timing=dataclasses.replace(TIMING, **timing))


def _writes(actions: list[Action]) -> list[bytes]:
    return [action.data for action in actions if isinstance(action, Write)]


def _wait(actions: list[Action]) -> float:
    last = actions[-1]
    assert isinstance(last, WaitUntil), actions
    return last.deadline


def _snapshot(actions: list[Action]) -> SnapshotReady:
    last = actions[-1]
    assert isinstance(last, SnapshotReady), actions
    return last


def _error(actions: list[Action]) -> GiveUp:
    last = actions[-1]
    assert isinstance(last, GiveUp), actions
    return last


def _with_status(frame: bytes, status: int) -> bytes:
    changed = bytearray(frame)
    changed[2] = status
    changed[-3:-1] = ((0x10000 - sum(changed[2:-3])) & 0xFFFF).to_bytes(2, "big")
    return bytes(changed)


def _corrupt(frame: bytes) -> bytes:
    return frame[:-3] + bytes([frame[-3] ^ 0xFF]) + frame[-2:]


def _jbd_poll(session: PollSession, *, at: float = 0.0, hardware: bool = True) -> list[Action]:
    """One full JBD poll answered at once; returns the last actions."""
    actions = session.start_poll(at)
    for reply in (BASIC, CELLS, HARDWARE):
        if not actions or not isinstance(actions[-1], WaitUntil):
            break
        if reply is HARDWARE and not hardware:
            break
        actions = session.feed(reply, at)
    return actions


# -- the ordinary poll ------------------------------------------------------------------------------


def test_a_poll_writes_each_request_after_the_previous_reply() -> None:
    session = _session()
    actions = session.start_poll(10.0, epoch=1_700_000_000.0)
    assert actions == [DiscardPending(), Write(REQUESTS["basic_info"]), WaitUntil(12.0)]
    actions = session.feed(BASIC[:20], 10.1)  # half a frame: nothing yet
    assert actions == [WaitUntil(12.0)]
    actions = session.feed(BASIC[20:], 10.2)
    assert actions == [DiscardPending(), Write(REQUESTS["cell_voltages"]), WaitUntil(12.2)]
    actions = session.feed(CELLS, 10.3)
    assert actions == [DiscardPending(), Write(REQUESTS["hardware_version"]), WaitUntil(12.3)]
    ready = _snapshot(session.feed(HARDWARE, 10.4))
    assert ready.frames == (JBD.check_frame(BASIC), JBD.check_frame(CELLS), JBD.check_frame(HARDWARE))
    assert ready.snapshot.battery_id == "house"
    assert ready.snapshot.timestamp == pytest.approx(1_700_000_010.4)
    assert ready.snapshot.cell_count == 4
    assert ready.snapshot.device.model == "JBD-SP04S034-L4S-200A-B-U"
    assert not session.busy


def test_connect_time_replies_are_cached_per_connection() -> None:
    session = _session()
    _snapshot(_jbd_poll(session))
    session.start_poll(5.0)
    session.feed(BASIC, 5.1)
    ready = _snapshot(session.feed(CELLS, 5.2))  # hardware_version is not asked again
    assert JBD.check_frame(HARDWARE) in ready.frames
    session.connection_reset()
    session.start_poll(9.0)
    session.feed(BASIC, 9.0)
    assert _writes(session.feed(CELLS, 9.0)) == [REQUESTS["hardware_version"]]


def test_the_device_identity_outlives_a_reconnect() -> None:
    session = _session(retries=0)
    _snapshot(_jbd_poll(session))
    session.connection_reset()
    session.start_poll(20.0)
    session.feed(BASIC, 20.0)
    session.feed(CELLS, 20.0)
    ready = _snapshot(session.tick(22.0))  # the optional hardware_version times out
    assert ready.snapshot.device.model == "JBD-SP04S034-L4S-200A-B-U"
    assert session.device is not None


def test_an_unrelated_reply_is_ignored_while_waiting() -> None:
    session = _session()
    session.start_poll(0.0)
    assert session.feed(CELLS, 0.1) == [WaitUntil(2.0)]  # the reply to another request
    assert _writes(session.feed(BASIC, 0.2)) == [REQUESTS["cell_voltages"]]


def test_several_frames_in_one_chunk_answer_only_the_current_request() -> None:
    session = _session()
    session.start_poll(0.0)
    # The second frame was not asked for yet: the next request starts from a clean slate.
    actions = session.feed(BASIC + CELLS, 0.1)
    assert actions == [DiscardPending(), Write(REQUESTS["cell_voltages"]), WaitUntil(2.1)]
    assert _wait(session.tick(2.1)) == pytest.approx(2.3)  # so it is still waiting (then backing off)


def test_noise_and_junk_chunks_are_skipped() -> None:
    session = _session()
    session.start_poll(0.0)
    session.feed(b"AT\r\n", 0.0)
    session.feed(b"\x00\x13garbage", 0.0)
    assert _writes(session.feed(BASIC, 0.0)) == [REQUESTS["cell_voltages"]]


def test_extra_ticks_change_nothing() -> None:
    session = _session()
    session.start_poll(0.0)
    assert session.tick(1.0) == [WaitUntil(2.0)]
    assert session.tick(1.5) == [WaitUntil(2.0)]
    idle = _session()
    assert idle.tick(5.0) == []
    assert idle.feed(BASIC, 5.0) == []


# -- failures and retries ---------------------------------------------------------------------------


def test_silence_is_retried_with_doubling_backoff_then_a_timeout() -> None:
    session = _session()
    session.start_poll(0.0)
    assert _wait(session.tick(2.0)) == pytest.approx(2.2)
    actions = session.tick(2.2)
    assert actions[:2] == [DiscardPending(), Write(REQUESTS["basic_info"])]
    assert _wait(actions) == pytest.approx(4.2)
    backoff = _wait(session.tick(4.2))
    assert backoff == pytest.approx(4.6)
    assert _writes(session.tick(backoff)) == [REQUESTS["basic_info"]]
    failure = _error(session.tick(backoff + 2.0))
    assert isinstance(failure.error, DeviceTimeout)
    assert str(failure.error) == "house: basic_info: no reply within 2.0 s"
    assert failure.drop_link  # a silent link is reopened before the next poll
    assert not session.busy


def test_a_reply_during_the_backoff_is_discarded() -> None:
    session = _session()
    session.start_poll(0.0)
    session.tick(2.0)
    assert _wait(session.feed(BASIC, 2.1)) == pytest.approx(2.2)
    actions = session.tick(2.2)
    assert actions[:2] == [DiscardPending(), Write(REQUESTS["basic_info"])]


def test_a_retry_that_is_answered_continues_the_poll() -> None:
    session = _session()
    session.start_poll(0.0)
    session.tick(2.0)
    session.tick(2.2)
    assert _writes(session.feed(BASIC, 2.5)) == [REQUESTS["cell_voltages"]]


def test_only_corrupt_replies_are_a_frame_error() -> None:
    session = _session(retries=1)
    session.start_poll(0.0)
    session.feed(_corrupt(BASIC), 0.1)
    session.tick(2.0)
    session.tick(2.2)
    session.feed(_corrupt(BASIC), 2.3)
    failure = _error(session.tick(4.2))
    assert isinstance(failure.error, FrameError)
    assert "basic_info: only corrupt replies (checksum mismatch" in str(failure.error)
    assert not failure.drop_link
    assert session.assembler_stats.rejected == 2


def test_a_corrupt_then_silent_attempt_is_a_timeout() -> None:
    session = _session(retries=1)
    session.start_poll(0.0)
    session.feed(_corrupt(BASIC), 0.1)
    session.tick(2.0)
    session.tick(2.2)  # the second attempt hears nothing at all
    assert isinstance(_error(session.tick(4.2)).error, DeviceTimeout)


def test_an_error_status_fails_at_once() -> None:
    session = _session()
    session.start_poll(0.0)
    failure = _error(session.feed(_with_status(BASIC, 0x80), 0.1))
    assert type(failure.error) is ProtocolError
    assert str(failure.error) == "house: basic_info: the BMS answered with an error status"


def test_an_optional_request_is_skipped_on_timeout_and_not_asked_again() -> None:
    session = _session(retries=0)
    session.start_poll(0.0)
    session.feed(BASIC, 0.1)
    session.feed(CELLS, 0.2)
    ready = _snapshot(session.tick(2.2))
    assert ready.snapshot.timestamp == pytest.approx(2.2)
    assert len(ready.frames) == 2
    actions = session.start_poll(10.0)
    session.feed(BASIC, 10.0)
    assert isinstance(session.feed(CELLS, 10.0)[-1], SnapshotReady)
    assert REQUESTS["hardware_version"] not in _writes(actions)


def test_the_poll_deadline_caps_every_wait() -> None:
    session = _session(poll_deadline=3.0, retries=5)
    session.start_poll(100.0)
    session.tick(102.0)
    assert _wait(session.tick(102.2)) == pytest.approx(103.0)  # not 104.2
    failure = _error(session.tick(103.0))
    assert isinstance(failure.error, DeviceTimeout)
    assert str(failure.error) == "house: poll did not finish within 3 s"
    assert not failure.drop_link


def test_a_chunk_after_the_deadline_does_not_complete_the_poll() -> None:
    session = _session(poll_deadline=1.0)
    session.start_poll(0.0)
    assert isinstance(_error(session.feed(BASIC, 1.5)).error, DeviceTimeout)


def test_impossible_content_is_a_decode_error() -> None:
    short = bytearray(b"\xdd\x03\x00\x04\x01\x02\x03\x04\x00\x00\x77")
    short[-3:-1] = ((0x10000 - sum(short[2:-3])) & 0xFFFF).to_bytes(2, "big")
    session = _session(retries=0)
    session.start_poll(0.0)
    session.feed(bytes(short), 0.0)
    session.feed(CELLS, 0.0)
    failure = _error(session.feed(HARDWARE, 0.0))
    assert isinstance(failure.error, DecodeError)
    assert failure.error.battery_id == "house"


def test_a_reset_abandons_the_job() -> None:
    session = _session()
    session.start_poll(0.0)
    session.feed(BASIC[:10], 0.0)
    session.connection_reset()
    assert not session.busy
    assert session.tick(50.0) == []
    session.start_poll(60.0)
    assert _writes(session.feed(BASIC, 60.0)) == [REQUESTS["cell_voltages"]]  # the partial frame is gone


# -- numbered multi-frame replies (Daly A5) ------------------------------------------------------------


A5_FRAMES = a5_poll([3300 + index for index in range(16)], [20, 21])
A5_BY_KEY: dict[int, list[bytes]] = {}
for _a5 in A5_FRAMES:
    A5_BY_KEY.setdefault(_a5[2], []).append(_a5)


def _a5_answer(session: PollSession, actions: list[Action], now: float, *, glue: bool = False) -> list[Action]:
    while isinstance(actions[-1], WaitUntil):
        written = _writes(actions)
        assert len(written) == 1, actions
        replies = A5_BY_KEY[written[0][2]]
        if glue:
            actions = session.feed(b"".join(replies), now)
        else:
            for reply in replies:
                actions = session.feed(reply, now)
    return actions


def test_numbered_frames_are_collected_up_to_the_cell_count() -> None:
    session = _session(A5)
    ready = _snapshot(_a5_answer(session, session.start_poll(0.0), 0.1))
    assert ready.snapshot.cell_count == 16
    assert sum(1 for frame in ready.frames if frame.key == 0x95) == 6  # 16 cells, 3 per frame


def test_numbered_frames_glued_into_one_chunk_are_all_used() -> None:
    session = _session(A5)
    ready = _snapshot(_a5_answer(session, session.start_poll(0.0), 0.1, glue=True))
    assert ready.snapshot.cell_count == 16
    assert len(ready.snapshot.temperatures) == 2


def test_a_missing_numbered_frame_of_a_required_reply_times_out() -> None:
    session = _session(A5)
    actions = session.start_poll(0.0)
    while _writes(actions)[0][2] != 0x95:
        actions = _a5_answer_one(session, actions, 0.0)
    for reply in A5_BY_KEY[0x95][:-1]:
        actions = session.feed(reply, 0.5)
    assert actions == [WaitUntil(2.5)]  # each numbered frame has its own timeout
    failure = _error(session.tick(2.5))
    assert isinstance(failure.error, DeviceTimeout)
    assert failure.drop_link


def test_an_unknown_count_ends_when_the_line_goes_quiet() -> None:
    # Temperatures are optional, their count known: a missing last frame ends the reply quietly and
    # the decoder (not the session) decides whether the snapshot is complete.
    session = _session(A5)
    actions = session.start_poll(0.0)
    while _writes(actions)[0][2] != 0x96:
        actions = _a5_answer_one(session, actions, 0.0)
    actions = session.feed(A5_BY_KEY[0x96][0], 0.0)
    assert _writes(actions)[0][2] == 0x97  # 2 sensors fit one frame


def test_a_missing_numbered_frame_of_an_optional_reply_ends_it_quietly() -> None:
    frames = a5_poll([3300] * 4, [20] * 8)  # 8 sensors: two temperature frames
    by_key: dict[int, list[bytes]] = {}
    for frame in frames:
        by_key.setdefault(frame[2], []).append(frame)
    session = _session(A5)
    actions = session.start_poll(0.0)
    while _writes(actions)[0][2] != 0x96:
        for reply in by_key[_writes(actions)[0][2]]:
            actions = session.feed(reply, 0.0)
    actions = session.feed(by_key[0x96][0], 0.0)
    assert actions == [WaitUntil(2.0)]
    assert _writes(session.tick(2.0))[0][2] == 0x97  # the poll goes on; the decoder judges the gap


def _a5_answer_one(session: PollSession, actions: list[Action], now: float) -> list[Action]:
    for reply in A5_BY_KEY[_writes(actions)[0][2]]:
        actions = session.feed(reply, now)
    return actions


# -- streamed replies (JK) -------------------------------------------------------------------------


def _jk_frames(offset: float) -> tuple[bytes, bytes]:
    pack = PackModel(PackConfig(cells=8, current_amplitude=0.0, seed=3))
    pack.cell_offsets[0] += offset
    bms = VirtualBms(JK, pack)
    device = bms.replies_for(0x03)[-1]
    cells = bms.replies_for(0x02)[-1]
    return device, cells


JK_DEVICE, JK_OLD = _jk_frames(0.0)
_, JK_NEW = _jk_frames(30.0)
JK_CELL_REQUEST = JK.requests[1].frame


def _jk_first_poll(session: PollSession) -> SnapshotReady:
    actions = session.start_poll(0.0)
    actions = session.feed(JK_DEVICE, 0.1)
    assert _writes(actions) == [JK_CELL_REQUEST]
    return _snapshot(session.feed(JK_OLD, 0.2))


def test_a_streamed_reply_is_the_newest_frame_received() -> None:
    session = _session(JK)
    first = _jk_first_poll(session)
    actions = session.start_poll(10.0)
    assert actions == [WaitUntil(10.0)]  # feed what already arrived, then tick: no request is written
    for frame in (JK_OLD, JK_OLD, JK_NEW):
        assert _writes(session.feed(frame, 10.0)) == []
    ready = _snapshot(session.tick(10.0))
    assert ready.snapshot.cell_voltages[0] > first.snapshot.cell_voltages[0] + 0.01


def test_streamed_frames_fed_between_polls_are_kept_newest_last() -> None:
    session = _session(JK)
    _jk_first_poll(session)
    for _ in range(20):
        assert session.feed(JK_OLD, 5.0) == []
    session.feed(JK_NEW, 6.0)
    actions = session.start_poll(10.0)
    ready = _snapshot(session.tick(10.0))
    assert ready.frames[-1].raw == JK_NEW
    assert _writes(actions) == []


def test_no_fresh_stream_frame_waits_then_asks_again() -> None:
    session = _session(JK)
    _jk_first_poll(session)
    session.start_poll(10.0)
    assert session.tick(10.0) == [WaitUntil(12.0)]  # nothing arrived: wait for the next streamed frame
    session.tick(12.0)
    assert _writes(session.tick(12.2)) == [JK_CELL_REQUEST]  # the retry asks again


def test_streaming_starts_again_after_a_reconnect() -> None:
    session = _session(JK)
    _jk_first_poll(session)
    session.connection_reset()
    actions = session.start_poll(10.0)
    assert _writes(actions) == [JK.requests[0].frame]


# -- commands ------------------------------------------------------------------------------------


def test_a_command_is_confirmed_by_its_reply() -> None:
    frame = JBD.build_command("set_mosfets", charge=False, discharge=True)
    spec = JBD.definition.commands["set_mosfets"]
    request = RequestSpec(name="set_mosfets", frame=frame, reply=spec.reply, timeout=0.5)
    session = _session()
    actions = session.start_command(request, 0.0)
    assert actions == [DiscardPending(), Write(frame), WaitUntil(0.5)]
    assert session.feed(ACK, 0.2) == [ReplyReady(JBD.check_frame(ACK))]


def test_a_command_without_reply_is_done_once_written() -> None:
    request = RequestSpec(name="poke", frame=b"\x01")
    assert _session().start_command(request, 0.0) == [DiscardPending(), Write(b"\x01"), ReplyReady(None)]


def test_an_unanswered_command_times_out_after_its_own_timeout_and_retries() -> None:
    request = RequestSpec(name="set_mosfets", frame=b"\xdd", reply=0xE1, timeout=0.5)
    session = _session(retries=0)
    session.start_command(request, 0.0)
    failure = _error(session.tick(0.5))
    assert str(failure.error) == "house: set_mosfets: no reply within 0.5 s"


# -- fuzzing ---------------------------------------------------------------------------------------


_VALID = {BASIC, CELLS, HARDWARE}
_UNRELATED = [ACK, jbd_frame(0x06, b"\x01\x02")]
_piece = st.one_of(
    st.sampled_from([BASIC, CELLS, HARDWARE, *_UNRELATED]),
    st.sampled_from([_corrupt(BASIC), _corrupt(CELLS), _with_status(BASIC, 0x80), BASIC[:-1], b"AT\r\n"]),
    # noise without the start marker, so that it cannot form a valid frame by accident
    st.binary(max_size=40).map(lambda data: data.replace(b"\xdd", b"")),
)
_event = st.one_of(
    st.tuples(st.just("feed"), _piece, st.integers(min_value=1, max_value=64), st.floats(0, 3)),
    st.tuples(st.just("tick"), st.just(b""), st.just(0), st.floats(0, 5)),
    st.tuples(st.just("poll"), st.just(b""), st.just(0), st.floats(0, 1)),
    st.tuples(st.just("reset"), st.just(b""), st.just(0), st.just(0.0)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_event, max_size=40), backwards=st.booleans())
def test_any_chunking_noise_and_clock_gives_only_bmsgate_errors(
    events: list[tuple[str, bytes, int, float]], backwards: bool
) -> None:
    session = _session(retries=1, request_timeout=1.0, poll_deadline=6.0)
    now = 0.0
    _check(session.start_poll(now))
    for kind, data, size, step in events:
        # The clock usually moves forward; a runtime with a broken clock may also jump back.
        now = now - step if backwards and kind == "tick" else now + step
        # Stricter than "only bmsgate errors": the session never raises; failures come as GiveUp.
        if kind == "feed":
            for start in range(0, len(data), size):
                _check(session.feed(data[start : start + size], now))
            continue
        if kind == "tick":
            actions = session.tick(now)
        elif kind == "poll":
            actions = session.start_poll(now)
        else:
            session.connection_reset()
            actions = []
        _check(actions)


def _check(actions: list[Action]) -> None:
    for action in actions:
        if isinstance(action, SnapshotReady):
            assert all(frame.raw in _VALID for frame in action.frames)
        elif isinstance(action, GiveUp):
            assert isinstance(action.error, BmsgateError)
    if actions:
        assert isinstance(actions[-1], WaitUntil | SnapshotReady | GiveUp | ReplyReady)
