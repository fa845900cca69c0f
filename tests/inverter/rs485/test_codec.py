"""Pylontech RS485 codec against the facts file: checksums, real captured frames, replies, fuzzing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, FrameError
from bmsgate.inverter.phases import OutputPhase, Requests
from bmsgate.inverter.rs485.frame import FrameAssembler, PylonFrame, build_frame, length_field, parse_frame
from bmsgate.inverter.rs485.pylontech import DIALECTS, RTN, answer
from bmsgate.model import Alarm

from . import facts_decoder as facts
from .helpers import (
    OTHER_REQUESTS,
    SRNE_POLLS,
    VECTOR_A_CELLS,
    DIYBMS_0x4F_REPLY,
    REPLY_0x42,
    REPLY_0x44,
    REPLY_0x92_UP2500,
    REPLY_0x92_US,
    REQUEST_0x42,
    REQUEST_0x44,
    REQUEST_0x92,
    SYSTEM_0x42,
    status_of,
    vector_a_snapshot,
)

PYLONTECH = DIALECTS["pylontech"]
VOLTRONIC = DIALECTS["voltronic"]
SRNE = DIALECTS["srne"]

ALL_REAL = (
    REQUEST_0x42,
    REPLY_0x42,
    REQUEST_0x92,
    REPLY_0x92_UP2500,
    REPLY_0x92_US,
    REQUEST_0x44,
    REPLY_0x44,
    *SRNE_POLLS,
    *OTHER_REQUESTS.values(),
    SYSTEM_0x42,
    DIYBMS_0x4F_REPLY,
)


# -- checksums ---------------------------------------------------------------------------------------


def test_worked_example_of_the_spec() -> None:
    assert length_field(2) == 0xE002
    assert length_field(0x014) == 0xB014
    assert build_frame(0x20, 0x02, 0x46, 0x42, b"\x02") == REQUEST_0x42


@pytest.mark.parametrize("lenid", [0x088, 0x0A6, 0x0F1, 0x000, 0xFFF])
def test_lchksum_is_one_hex_digit_where_implementations_write_16(lenid: int) -> None:
    # (~sum & 0xF) + 1 gives 16 for these; the vendor's -sum mod 16 gives 0.
    field = length_field(lenid)
    assert field <= 0xFFFF
    nibbles = sum(int(c, 16) for c in f"{lenid:03X}")
    assert (field >> 12) == (-nibbles) % 16


def test_lchksum_sums_nibbles_not_bytes() -> None:
    # ai-republic's byte sum gives E012 for LENID 18; the nibble sum gives D012.
    assert length_field(18) == 0xD012


@pytest.mark.parametrize("raw", ALL_REAL)
def test_every_real_frame_parses_and_rebuilds_byte_for_byte(raw: bytes) -> None:
    frame = parse_frame(raw)
    independent = facts.read(raw)
    assert (frame.ver, frame.adr, frame.cid1, frame.cid2, frame.info) == (
        independent.ver,
        independent.adr,
        independent.cid1,
        independent.cid2,
        independent.info,
    )
    assert frame.encode() == raw


def test_the_spec_examples_that_do_not_verify_are_rejected() -> None:
    # Facts §1.3: the spec's own CHKSUM example is off by one.
    with pytest.raises(FrameError):
        parse_frame(b"~1203400456ABCEFEFC72\r")


@pytest.mark.parametrize(
    "raw",
    [
        REQUEST_0x42.replace(b"FD33", b"FD34"),  # CHKSUM
        REQUEST_0x42.replace(b"E002", b"D002"),  # LCHKSUM
        b"~20024642E00402FD33\r",  # LENID longer than INFO
        b"~2002464ZE00202FD33\r",  # not hex
        REQUEST_0x42[:-1],  # no CR
        b"~\r",
    ],
)
def test_malformed_frames_raise_frame_error(raw: bytes) -> None:
    with pytest.raises(FrameError):
        parse_frame(raw)


def test_assembler_handles_noise_chunks_and_restarts() -> None:
    assembler = FrameAssembler()
    stream = b"noise\r" + REQUEST_0x42[:7] + b"~" + REQUEST_0x92[1:] + REQUEST_0x44.replace(b"FD31", b"FD30")
    frames = [f for i in range(len(stream)) for f in assembler.feed(stream[i : i + 1])]
    assert [f.cid2 for f in frames] == [0x92]
    assert assembler.rejected == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_parser_only_raises_frame_error(data: bytes) -> None:
    try:
        parse_frame(data)
    except FrameError:
        pass
    FrameAssembler().feed(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([*ALL_REAL, b"~", b"\r", b"~20", b"0000", b"\x00\xff"]), max_size=12),
    st.integers(0, 30),
)
def test_fuzz_spliced_real_frames_never_crash_the_responder(parts: list[bytes], cut: int) -> None:
    assembler = FrameAssembler()
    stream = b"".join(parts)
    status = status_of()
    for frame in assembler.feed(stream[:cut]) + assembler.feed(stream[cut:]):
        for dialect in DIALECTS.values():
            try:
                reply = answer(frame, status, OutputPhase.NORMAL, Requests(), dialect)
            except BmsgateError:
                continue
            if reply is not None:
                facts.read(reply.encode())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40))
def test_fuzz_any_well_formed_request_gets_a_valid_reply_or_silence(adr: int, cid2: int, ver: int, info: bytes) -> None:
    request = PylonFrame(ver, adr, 0x46, cid2, info)
    for phase in (OutputPhase.NORMAL, OutputPhase.SAFE):
        reply = answer(request, status_of(stale=phase is OutputPhase.SAFE), phase, Requests(), PYLONTECH)
        if reply is not None:
            decoded = facts.read(reply.encode())
            assert decoded.cid1 == 0x46


# -- replies rebuild the real captures ---------------------------------------------------------------


def test_0x42_reply_reproduces_the_real_us_series_capture() -> None:
    reply = answer(parse_frame(REQUEST_0x42), status_of(), OutputPhase.NORMAL, Requests(), PYLONTECH)
    assert reply is not None
    assert reply.encode() == REPLY_0x42
    decoded = facts.analog_0x42(facts.read(REPLY_0x42).info)
    assert decoded["cells_mv"] == list(VECTOR_A_CELLS)
    assert decoded["temps_c"] == [35.2, 32.4, 32.5, 32.2, 35.2]
    assert decoded["current_a"] == 20.1
    assert decoded["voltage_v"] == 50.247
    assert (decoded["user_defined"], decoded["cycles"]) == (4, 18)
    assert (decoded["remaining_ah"], decoded["total_ah"]) == (94.905, 100.0)


def test_0x92_reply_reproduces_the_real_us_series_capture() -> None:
    reply = answer(parse_frame(REQUEST_0x92), status_of(), OutputPhase.NORMAL, Requests(), PYLONTECH)
    assert reply is not None
    assert reply.encode() == REPLY_0x92_US
    decoded = facts.management_0x92(reply.info)
    assert (decoded["cvl_v"], decoded["dvl_v"], decoded["ccl_a"], decoded["dcl_a"]) == (53.25, 45.0, 20.0, -50.0)


def test_0x92_up2500_capture_decodes_as_the_facts_say() -> None:
    decoded = facts.management_0x92(parse_frame(REPLY_0x92_UP2500).info)
    assert (decoded["cvl_v"], decoded["dvl_v"], decoded["ccl_a"], decoded["dcl_a"]) == (28.4, 23.2, 55.5, -55.5)
    status = status_of(charge_voltage=28.4, min_voltage=23.2, charge_current=55.5, discharge_current=55.5)
    reply = answer(parse_frame(REQUEST_0x92), status, OutputPhase.NORMAL, Requests(), PYLONTECH)
    assert reply is not None and reply.encode() == REPLY_0x92_UP2500


def test_0x44_reply_reproduces_the_real_capture_with_its_trailing_byte() -> None:
    reply = answer(parse_frame(REQUEST_0x44), status_of(), OutputPhase.NORMAL, Requests(), PYLONTECH)
    assert reply is not None
    assert reply.encode() == REPLY_0x44
    decoded = facts.alarm_0x44(reply.info)
    assert decoded["status"] == [0x00, 0x0E, 0x80, 0x00, 0x00]


def test_voltronic_gets_version_28_and_a_positive_dcl() -> None:
    status = status_of()
    reply = answer(parse_frame(OTHER_REQUESTS[0x4F]), status, OutputPhase.NORMAL, Requests(), VOLTRONIC)
    assert reply is not None and reply.encode() == DIYBMS_0x4F_REPLY
    # It then asks with VER 28, and the reply carries the request's VER.
    request = build_frame(0x28, 0x02, 0x46, 0x92, b"\x02")
    reply = answer(parse_frame(request), status, OutputPhase.NORMAL, Requests(), VOLTRONIC)
    assert reply is not None and reply.ver == 0x28
    assert facts.management_0x92(reply.info)["dcl_a"] == 50.0


# -- addressing, unknown commands, dialects ----------------------------------------------------------


def test_other_addresses_are_not_answered_on_a_shared_bus() -> None:
    request = parse_frame(build_frame(0x20, 0x03, 0x46, 0x42, b"\x03"))
    assert answer(request, status_of(), OutputPhase.NORMAL, Requests(), PYLONTECH) is None


def test_command_value_must_equal_the_address() -> None:
    request = parse_frame(build_frame(0x20, 0x02, 0x46, 0x92, b"\x05"))
    reply = answer(request, status_of(), OutputPhase.NORMAL, Requests(), PYLONTECH)
    assert reply is not None and reply.cid2 == RTN.COMMAND_FORMAT and reply.info == b""


@pytest.mark.parametrize("command", [0x47, 0x60, 0x94, 0x95, 0x10, 0xEE])
def test_unknown_or_refused_commands_get_cid2_invalid(command: int) -> None:
    info = b"\x02" + bytes(8) if command == 0x94 else b"\x02" if command == 0x95 else b""
    reply = answer(
        parse_frame(build_frame(0x20, 0x02, 0x46, command, info)),
        status_of(),
        OutputPhase.NORMAL,
        Requests(),
        PYLONTECH,
    )
    assert reply is not None
    assert (reply.cid2, reply.info) == (RTN.CID2_INVALID, b"")
    assert facts.read(reply.encode()).cid2 == 0x04


def test_not_a_battery_request_is_ignored() -> None:
    request = parse_frame(build_frame(0x20, 0x02, 0x40, 0x42, b"\x02"))
    assert answer(request, status_of(), OutputPhase.NORMAL, Requests(), PYLONTECH) is None


def test_whole_system_read_has_a_module_count() -> None:
    reply = answer(parse_frame(SYSTEM_0x42), status_of(), OutputPhase.NORMAL, Requests(), PYLONTECH)
    assert reply is not None and reply.cid2 == 0
    assert reply.info[:2] == b"\x00\x01"
    assert reply.info[2] == 15


@pytest.mark.parametrize("poll", SRNE_POLLS)
def test_easun_smx2_polls_at_0x12_are_answered_from_0x02(poll: bytes) -> None:
    reply = answer(parse_frame(poll), status_of(), OutputPhase.NORMAL, Requests(), DIALECTS["easun-smx2"])
    assert reply is not None
    decoded = facts.read(reply.encode())
    assert (decoded.ver, decoded.adr, decoded.cid1, decoded.cid2) == (0x20, 0x02, 0x46, 0x00)


def test_srne_answers_every_address_from_0x02() -> None:
    for adr in (0x02, 0x03, 0x12):
        reply = answer(
            parse_frame(build_frame(0x20, adr, 0x46, 0x61)), status_of(), OutputPhase.NORMAL, Requests(), SRNE
        )
        assert reply is not None and reply.adr == 0x02


def test_0x61_system_analog() -> None:
    snapshot = vector_a_snapshot(current=-12.34, soc=61.0, soh=97.0)
    reply = answer(parse_frame(SRNE_POLLS[0]), status_of(snapshot), OutputPhase.NORMAL, Requests(), SRNE)
    assert reply is not None
    decoded = facts.system_analog_0x61(reply.info)
    assert decoded["voltage_v"] == 50.247
    assert decoded["current_a"] == -12.34
    assert (decoded["soc"], decoded["soh_avg"], decoded["soh_min"]) == (61, 97, 97)
    assert (decoded["cycles_avg"], decoded["cycles_max"]) == (18, 18)
    assert decoded["cell_max_mv"] == 3352 and decoded["cell_max_at"] == (1 << 8) | 5
    assert decoded["cell_min_mv"] == 3348 and decoded["cell_min_at"] == (1 << 8) | 2
    assert (decoded["cell_t_max"], decoded["cell_t_min"]) == (35.2, 32.2)
    assert decoded["mosfet_t_max"] == 35.2


def test_0x62_flags_follow_the_alarms() -> None:
    snapshot = vector_a_snapshot(alarms=frozenset({Alarm.CELL_OVERVOLTAGE, Alarm.CHARGE_OVERCURRENT}))
    reply = answer(parse_frame(SRNE_POLLS[1]), status_of(snapshot), OutputPhase.NORMAL, Requests(), SRNE)
    assert reply is not None
    flags = facts.system_alarm_0x62(reply.info)
    assert {name for name, on in flags.items() if on} == {
        "cell_high_v",
        "protect_cell_over_v",
        "charge_overcurrent",
        "protect_charge_overcurrent",
    }


@pytest.mark.parametrize(("scale", "raw_ccl"), [(0.1, 200), (0.01, 2000)])
def test_0x63_current_unit_is_a_dialect_option_defaulting_to_0_1_a(scale: float, raw_ccl: int) -> None:
    dialect = dataclasses.replace(SRNE, system_current_scale=scale)
    reply = answer(parse_frame(SRNE_POLLS[2]), status_of(), OutputPhase.NORMAL, Requests(), dialect)
    assert reply is not None
    assert int.from_bytes(reply.info[4:6], "big") == raw_ccl
    decoded = facts.management_0x63(reply.info, scale)
    assert (decoded["cvl_v"], decoded["dvl_v"], decoded["ccl_a"], decoded["dcl_a"]) == (53.25, 45.0, 20.0, 50.0)
    assert decoded["charge_enable"] and decoded["discharge_enable"]
    assert SRNE.system_current_scale == 0.1


def test_limits_are_never_rounded_up() -> None:
    status = status_of(charge_voltage=53.2509, min_voltage=44.9991, charge_current=20.09, discharge_current=49.99)
    reply = answer(parse_frame(REQUEST_0x92), status, OutputPhase.NORMAL, Requests(), PYLONTECH)
    assert reply is not None
    decoded = facts.management_0x92(reply.info)
    assert (decoded["cvl_v"], decoded["dvl_v"], decoded["ccl_a"], decoded["dcl_a"]) == (53.25, 45.0, 20.0, -49.9)


def test_charge_immediately_requests_need_charging_allowed() -> None:
    status = status_of(charge_current=0.0)
    requests = Requests(force_charge_1=True, force_charge_2=True)
    reply = answer(parse_frame(REQUEST_0x92), status, OutputPhase.NORMAL, requests, PYLONTECH)
    assert reply is not None and reply.info[-1] == 0x40
    reply = answer(parse_frame(REQUEST_0x92), status_of(), OutputPhase.NORMAL, requests, PYLONTECH)
    assert reply is not None and reply.info[-1] == 0xF0


# -- stale and safe ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))
def test_safe_phase_zero_limits_enables_clear_error_flags(dialect: object) -> None:
    assert isinstance(dialect, type(PYLONTECH))
    stale = status_of(stale=True)
    adr = dialect.addresses[0] if dialect.addresses else 0x02
    reply_92 = answer(
        parse_frame(build_frame(0x20, adr, 0x46, 0x92, bytes((adr,)))), stale, OutputPhase.SAFE, Requests(), dialect
    )
    assert reply_92 is not None
    m = facts.management_0x92(reply_92.info)
    assert (m["ccl_a"], m["dcl_a"], m["charge_enable"], m["discharge_enable"]) == (0.0, 0.0, False, False)
    # The CVL is not raised and the DVL not lowered while stale.
    assert m["cvl_v"] <= 53.25 and m["dvl_v"] >= 45.0
    reply_63 = answer(parse_frame(build_frame(0x20, adr, 0x46, 0x63)), stale, OutputPhase.SAFE, Requests(), dialect)
    assert reply_63 is not None
    s = facts.management_0x63(reply_63.info, 0.1)
    assert (s["ccl_a"], s["dcl_a"], s["charge_enable"], s["discharge_enable"]) == (0.0, 0.0, False, False)
    reply_62 = answer(parse_frame(build_frame(0x20, adr, 0x46, 0x62)), stale, OutputPhase.SAFE, Requests(), dialect)
    assert reply_62 is not None
    flags = facts.system_alarm_0x62(reply_62.info)
    assert flags["internal_comm_error"] and flags["protect_system_fault"]


def test_safe_phase_claims_no_current_and_no_fet_state() -> None:
    stale = status_of(stale=True)
    reply = answer(parse_frame(REQUEST_0x42), stale, OutputPhase.SAFE, Requests(), PYLONTECH)
    assert reply is not None
    assert facts.analog_0x42(reply.info)["current_a"] == 0.0
    alarms = answer(parse_frame(REQUEST_0x44), stale, OutputPhase.SAFE, Requests(), PYLONTECH)
    assert alarms is not None
    assert facts.alarm_0x44(alarms.info)["status"][1:3] == [0, 0]


@pytest.mark.parametrize("phase", [OutputPhase.SILENT, OutputPhase.WAITING])
def test_silent_and_waiting_phases_answer_nothing(phase: OutputPhase) -> None:
    for raw in (REQUEST_0x42, REQUEST_0x92, *SRNE_POLLS, OTHER_REQUESTS[0x4F], b"~200246EE0000FD9F\r"):
        frame = parse_frame(raw) if raw != b"~200246EE0000FD9F\r" else PylonFrame(0x20, 0x02, 0x46, 0xEE)
        for dialect in DIALECTS.values():
            assert answer(frame, status_of(stale=True), phase, Requests(), dialect) is None


def test_a_protection_active_when_the_data_went_stale_stays_reported() -> None:
    # The stale bank is blind; the protection seen last must not vanish from 0x62 in the safe phase.
    snapshot = vector_a_snapshot(alarms=frozenset({Alarm.CELL_OVERVOLTAGE}))
    reply = answer(parse_frame(SRNE_POLLS[1]), status_of(snapshot, stale=True), OutputPhase.SAFE, Requests(), SRNE)
    assert reply is not None
    assert facts.system_alarm_0x62(reply.info)["protect_cell_over_v"]


def test_stale_capacity_says_the_safe_soc_not_the_last_fresh_capacity() -> None:
    # Two packs at 95 % and 40 %: stale, the safe SoC is the lowest last known (40 %), and the capacity
    # fields an inverter turns into a SoC must say the same, not the last fresh bank's 134.9 of 200 Ah.
    packs = (
        vector_a_snapshot("a"),
        vector_a_snapshot("b", soc=40.0, remaining_capacity=40.0),
    )
    request = parse_frame(REQUEST_0x42)
    live = answer(request, status_of(*packs), OutputPhase.NORMAL, Requests(), PYLONTECH)
    stale = answer(request, status_of(*packs, stale=True), OutputPhase.SAFE, Requests(), PYLONTECH)
    assert live is not None and stale is not None
    live_values, stale_values = facts.analog_0x42(live.info), facts.analog_0x42(stale.info)
    assert live_values["remaining_ah"] == pytest.approx(134.905)
    assert stale_values["remaining_ah"] == pytest.approx(80.0)
    assert stale_values["total_ah"] == pytest.approx(200.0)
