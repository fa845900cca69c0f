"""Offgridtec (``ogt``): the wire key from the name, types A and B, the refusal and the cell probe (engine 6)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DefinitionError, ProtocolError
from bmsgate.protocols import PollSession, get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.framing import Frame
from bmsgate.protocols.framingspec import WireKeySpec
from bmsgate.protocols.multiplied import multiplied_raw, multiplied_value
from bmsgate.protocols.session import Action, GiveUp, SnapshotReady, WaitUntil, Write
from bmsgate.protocols.wirekey import wire_key, xor_bytes
from bmsgate.runtime.simulation import PackConfig
from bmsgate.transports.simulator import SimulatorTransport

from .family_frames import OGT_A, OGT_B, OGT_REFUSAL

OGT = get_protocol("ogt")
FRAMING = OGT.definition.framing


def _wire_key_spec() -> WireKeySpec:
    spec = FRAMING.wire_key
    assert spec is not None
    return spec


SPEC = _wire_key_spec()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = 0x10  # aiobmsble's test: both of its names give it


# -- the key --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("SmartBat-A12345", 0x10),  # 0x3039: 3 + 2 + 3 + 3, + 5
        ("SmartBat-B12294", 0x10),  # 0x3006: 3 + 2 + 2 + 1, + 8
        ("SmartBat-B15051", 0x19),  # 0x3ACB: 3 + 7 + 5 + 2, + 8
        ("SmartBat-A1", 0x10),  # 0x0001: 2 + 2 + 2 + 5, + 5 (padded to four hex digits)
    ],
)
def test_the_key_is_the_table_sum_of_the_names_number_in_hex_plus_the_types_offset(name: str, key: int) -> None:
    assert wire_key(name, SPEC) == key


@pytest.mark.parametrize(
    "name",
    [None, "", "SmartBat-C12294", "SmartBat-A", "SmartBat-A12x45", "smartbat-A12345", "SmartBat-A1234567890"],
)
def test_a_name_without_type_or_number_gives_no_key(name: str | None) -> None:
    assert wire_key(name, SPEC) is None


@given(name=st.text(max_size=40) | st.from_regex(r"SmartBat-[A-C][0-9]{0,12}", fullmatch=True))
@FUZZ
def test_any_name_gives_a_byte_or_no_key(name: str) -> None:
    key = wire_key(name, SPEC)
    assert key is None or 0 <= key <= 0xFF


@given(data=st.binary(max_size=300), key=st.integers(0, 255))
@FUZZ
def test_the_xor_is_its_own_inverse(data: bytes, key: int) -> None:
    assert xor_bytes(xor_bytes(data, key), key) == data


# -- the source's frames ----------------------------------------------------------------------------------


def _clear(wire: bytes) -> list[Frame]:
    return OGT.new_assembler().feed(xor_bytes(wire, KEY))


def test_the_refusal_of_the_source_is_a_frame_without_key_that_refuses() -> None:
    assert xor_bytes(OGT_REFUSAL, KEY) == b"+RD,Erro\x00"
    assert _clear(OGT_REFUSAL) == [Frame(b"+RD,Erro\x00", None, False)]


def test_a_refusal_and_a_reply_in_one_chunk_or_cut_anywhere_are_both_read() -> None:
    reply = OGT_B.replies["b_voltage"][0]
    stream = xor_bytes(OGT_REFUSAL + reply, KEY)
    whole = OGT.new_assembler().feed(stream)
    assert [frame.key for frame in whole] == [None, 0x09]
    for cut in range(1, len(stream)):
        assembler = OGT.new_assembler()
        assert assembler.feed(stream[:cut]) + assembler.feed(stream[cut:]) == whole


def test_a_24_bit_register_is_the_signed_number_times_its_multiplier() -> None:
    # A's current: 85 FF 00 (multiplier 0 counts as 1) = -123 x 10 mA; B's: 7B 00 0A = 123 x 10 mA.
    (current_a,) = _clear(OGT_A.replies["a_current"][0])
    (current_b,) = _clear(OGT_B.replies["b_current"][0])
    assert current_a.raw[4:8] == bytes.fromhex("1085FF00")
    assert current_b.raw[4:8] == bytes.fromhex("0A7B000A")
    decode = multiplied_value(0.001, 0.0, (1000, 0))
    assert decode(0x0A007B) == 1.23
    assert decode(0x00FF85) == -0.123


@given(steps=st.integers(-0x7FFF * 0xFF, 0x7FFF * 0xFF))
@FUZZ
def test_the_encoder_picks_the_smallest_multiplier_that_fits(steps: int) -> None:
    raw = multiplied_raw(steps)
    factor = max(raw >> 16, 1)
    assert 0 <= raw < 1 << 24
    assert abs(multiplied_value(1.0, 0.0, None)(raw) - steps) <= factor / 2 + 1
    assert (raw >> 16 == 0) == (abs(steps) <= 0x7FFF)


# -- sessions -----------------------------------------------------------------------------------------------


def _answers(name: str, replies: dict[str, list[bytes]]) -> dict[bytes, bytes]:
    """Scrambled request -> the source's scrambled reply (any other request: the refusal, as its mock)."""
    key = wire_key(name, SPEC)
    assert key is not None
    answers: dict[bytes, bytes] = {}
    for request in OGT.requests_for(name):
        frames = replies.get(request.name)
        answers[xor_bytes(request.frame, key)] = frames[0] if frames else OGT_REFUSAL
    return answers


def _poll(name: str | None, answers: dict[bytes, bytes]) -> tuple[list[bytes], Action]:
    session = PollSession(OGT, device_name=name)
    actions = session.start_poll(0.0)
    written: list[bytes] = []
    now = 0.0
    while True:
        outcome = [action for action in actions if isinstance(action, SnapshotReady | GiveUp)]
        if outcome:
            return written, outcome[0]
        writes = [action.data for action in actions if isinstance(action, Write)]
        written += writes
        now += 0.05
        if writes and writes[-1] in answers:
            actions = session.feed(answers[writes[-1]], now)
        else:
            waits = [action for action in actions if isinstance(action, WaitUntil)]
            now = max(now, waits[-1].deadline)
            actions = session.tick(now)


def test_type_a_writes_its_scrambled_header_and_reads_the_stated_values() -> None:
    written, outcome = _poll("SmartBat-A12345", _answers("SmartBat-A12345", OGT_A.replies))
    assert isinstance(outcome, SnapshotReady)
    assert {data[:4] for data in written} == {bytes.fromhex("3B425151")}  # the source's test asserts it
    assert len(written) == 7
    snapshot = outcome.snapshot
    assert (snapshot.voltage, snapshot.current, snapshot.soc, snapshot.cycles) == (45.681, -1.23, 14, 99)
    assert snapshot.cell_voltages == ()


def test_type_b_probes_its_cells_until_a_register_is_refused() -> None:
    written, outcome = _poll("SmartBat-B12294", _answers("SmartBat-B12294", OGT_B.replies))
    assert isinstance(outcome, SnapshotReady)
    assert {data[:4] for data in written} == {bytes.fromhex("3B422126")}
    # Seven registers, cells 63-60 and the refused 59: the probe ends there.
    assert len(written) == 12
    assert xor_bytes(written[-1], KEY) == b"+R163B02"
    assert outcome.snapshot.cell_voltages == (3.306, 3.305, 3.304, 3.303)
    assert outcome.snapshot.mosfet_temperature == pytest.approx(21.75)


def test_a_pack_that_refuses_the_first_cell_reports_none_and_the_poll_succeeds() -> None:
    replies = {name: frames for name, frames in OGT_B.replies.items() if not name.startswith("b_cell")}
    written, outcome = _poll("SmartBat-B12294", _answers("SmartBat-B12294", replies))
    assert isinstance(outcome, SnapshotReady)
    assert len(written) == 8
    assert outcome.snapshot.cell_voltages == ()


def test_a_refused_register_that_is_no_probe_fails_the_poll() -> None:
    replies = {name: frames for name, frames in OGT_A.replies.items() if name != "a_voltage"}
    _, outcome = _poll("SmartBat-A12345", _answers("SmartBat-A12345", replies))
    assert isinstance(outcome, GiveUp)
    assert isinstance(outcome.error, ProtocolError)
    assert "a_voltage" in str(outcome.error)


@pytest.mark.parametrize("name", [None, "SmartBat-C12294", "SmartBat-A"])
def test_a_device_whose_name_gives_no_key_is_not_polled(name: str | None) -> None:
    actions = PollSession(OGT, device_name=name).start_poll(0.0)
    assert len(actions) == 1
    assert isinstance(actions[0], GiveUp)
    assert isinstance(actions[0].error, ProtocolError)
    assert repr(name) in str(actions[0].error)
    assert not actions[0].drop_link


@given(chunks=st.lists(st.binary(max_size=40), max_size=30))
@FUZZ
def test_hostile_chunks_during_a_poll_give_actions_only(chunks: list[bytes]) -> None:
    session = PollSession(OGT, device_name="SmartBat-B12294")
    session.start_poll(0.0)
    now = 0.0
    for chunk in chunks:
        now += 0.01
        session.feed(chunk, now)
    # Garbage answers nothing: past the poll deadline the poll gives up (it never decodes noise into a snapshot).
    actions = session.tick(now + 100.0)
    assert any(isinstance(action, GiveUp) for action in actions)
    assert not session.busy


async def test_the_simulator_speaks_the_scrambled_wire_of_its_name() -> None:
    transport = SimulatorTransport(OGT, PackConfig(cells=4, ntc_count=1))
    assert transport.device_name == "SmartBat-A12345"
    async with transport:
        await transport.write(xor_bytes(OGT.requests[2].frame, KEY))  # a_voltage, as the session writes it
        reply = await transport.receive(timeout=2.0)
    assert transport.writes[0][:4] == bytes.fromhex("3B425151")
    assert reply.startswith(b";BT<")  # '+RD,' scrambled with 0x10
    (frame,) = _clear(reply)
    assert frame.key == 0x08


# -- the definition's checks -----------------------------------------------------------------------------------


def _definition(**changes: Any) -> dict[str, Any]:
    data = OGT.definition.model_dump(mode="json", exclude_none=True)
    data.pop("requires", None)
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"variants__select": "var.x"}, "exactly one of 'select'"),
        ({"variants__by_name": {"SmartBat-A*": "c"}}, "that 'choices' does not define"),
        ({"variants__by_name": None, "variants__select": "var.x"}, "needs 'variants.by_name'"),
        ({"framing__refusal": "45 72 72 6F 00"}, "'refusal' begins with 'start'"),
        ({"framing__start": "41 42"}, "needs a byte that is no hex digit"),
        ({"framing__wire_key__add": {"AB": 5}}, "single type characters"),
    ],
)
def test_inconsistent_definitions_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        definition_from_mapping(_definition(**changes))


def test_a_multiplier_needs_a_u24() -> None:
    data = _definition()
    data["replies"]["0x04" if "0x04" in data["replies"] else "4"]["fields"][0]["type"] = "u16"
    with pytest.raises(DefinitionError, match="'multiplier' is for a scalar u24"):
        definition_from_mapping(data)


def test_a_probe_request_needs_a_reply() -> None:
    data = _definition()
    data["requests"][-1].pop("reply")
    with pytest.raises(DefinitionError, match="'until_refused' request"):
        definition_from_mapping(data)


def test_only_our_errors_escape_for_any_frame() -> None:
    for wire in (OGT_REFUSAL, *[frame for frames in OGT_B.replies.values() for frame in frames]):
        for frame in _clear(wire):
            try:
                OGT.decode([frame], timestamp=0.0, variant="b")
            except BmsgateError:
                pass
