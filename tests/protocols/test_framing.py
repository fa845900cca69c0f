"""Frame assembly: any chunking, noise, junk, corruption and bounded buffers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError
from bmsgate.protocols import decode, get_protocol
from bmsgate.protocols.checksums import CHECKSUMS, byte_sum, crc16_modbus, span_sum
from bmsgate.runtime.simulation import PackConfig, PackModel

from .test_jbd import CAPTURE_4S_BASIC, VENDOR_17S_BASIC, VENDOR_17S_CELLS

JBD = get_protocol("jbd")
BASIC = bytes.fromhex(VENDOR_17S_BASIC)
CELLS = bytes.fromhex(VENDOR_17S_CELLS)
REFERENCE = decode(JBD, [BASIC, CELLS], battery_id="t", timestamp=0.0).to_dict()


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", range(1, len(BASIC + CELLS) + 1))
def test_every_chunk_size_gives_the_same_snapshot(size: int) -> None:
    assembler = JBD.new_assembler()
    frames = []
    for chunk in _chunks(BASIC + CELLS, size):
        frames += assembler.feed(chunk)
    assert [frame.raw for frame in frames] == [BASIC, CELLS]
    assert decode(JBD, frames, battery_id="t", timestamp=0.0).to_dict() == REFERENCE
    assert assembler.buffered == 0


def test_ble_notification_split_of_a_17_cell_reply() -> None:
    # jbd.md: a 17-cell 0x04 reply (41 bytes) arrives as 20 + 20 + 1.
    assembler = JBD.new_assembler()
    pieces = _chunks(CELLS, 20)
    assert [len(piece) for piece in pieces] == [20, 20, 1]
    assert assembler.feed(pieces[0]) == []
    assert assembler.feed(pieces[1]) == []
    assert [frame.raw for frame in assembler.feed(pieces[2])] == [CELLS]


def test_noise_before_the_start_marker_is_dropped() -> None:
    assembler = JBD.new_assembler()
    frames = assembler.feed(b"\x00\x13garbage\x77" + BASIC)
    assert [frame.raw for frame in frames] == [BASIC]
    assert assembler.stats.noise_bytes == 10


def test_at_noise_chunks_between_notifications_are_dropped() -> None:
    assembler = JBD.new_assembler()
    frames = []
    for chunk in _chunks(BASIC, 20):
        frames += assembler.feed(chunk)
        frames += assembler.feed(b"AT\r\n")
    assert [frame.raw for frame in frames] == [BASIC]


def test_corrupt_frame_is_skipped_and_the_next_one_recovered() -> None:
    corrupt = bytearray(BASIC)
    corrupt[10] ^= 0xFF
    assembler = JBD.new_assembler()
    frames = assembler.feed(bytes(corrupt) + CELLS)
    assert [frame.raw for frame in frames] == [CELLS]
    assert assembler.stats.rejected >= 1
    assert "checksum" in (assembler.stats.last_error or "")


def test_truncated_frame_followed_by_a_good_one_resynchronises() -> None:
    assembler = JBD.new_assembler()
    frames = assembler.feed(BASIC[:15])
    frames += assembler.feed(CELLS)
    frames += assembler.feed(BASIC)
    assert CELLS in [frame.raw for frame in frames] or BASIC in [frame.raw for frame in frames]
    assert frames[-1].raw == BASIC


def test_wrong_end_byte_is_rejected() -> None:
    bad = BASIC[:-1] + b"\x78"
    assembler = JBD.new_assembler()
    assert assembler.feed(bad) == []
    assert "does not end with 77" in (assembler.stats.last_error or "")


def test_oversize_length_is_rejected_without_waiting_forever() -> None:
    assembler = JBD.new_assembler()
    # 0xDD then a plausible header announcing a short frame that never validates, then a good frame.
    assert assembler.feed(b"\xdd\x03\x00\x05\x01\x02") == []
    frames = assembler.feed(bytes(20) + BASIC)
    assert [frame.raw for frame in frames] == [BASIC]


def test_buffer_is_bounded() -> None:
    assembler = JBD.new_assembler()
    # A header announcing a long frame, then lots of bytes that never complete a valid one.
    for _ in range(400):
        assembler.feed(b"\xdd\x03\x00\xff" + bytes(16))
        assert assembler.buffered <= 4 * JBD.definition.framing.max_length
    assert [frame.raw for frame in assembler.feed(BASIC)] == [BASIC] or assembler.buffered < 2000


def test_reset_forgets_a_partial_frame() -> None:
    assembler = JBD.new_assembler()
    assembler.feed(BASIC[:10])
    assembler.reset()
    assert assembler.buffered == 0
    assert [frame.raw for frame in assembler.feed(CELLS)] == [CELLS]


def test_oversize_payload_from_a_board_that_appends_bytes() -> None:
    payload = bytes.fromhex(CAPTURE_4S_BASIC)[4:-3] + bytes(40)
    body = bytes([0x00, len(payload)]) + payload
    frame = b"\xdd\x03" + body + ((0x10000 - sum(body)) & 0xFFFF).to_bytes(2, "big") + b"\x77"
    assembled = JBD.new_assembler().feed(frame)
    assert decode(JBD, assembled, timestamp=0).voltage == pytest.approx(15.60)


# -- fuzzing: only bmsgate's own exceptions may escape ---------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_fuzz_assembler_with_random_chunks(chunks: list[bytes]) -> None:
    assembler = JBD.new_assembler()
    for chunk in chunks:
        for frame in assembler.feed(chunk):
            try:
                decode(JBD, [frame], timestamp=0)
            except BmsgateError:
                pass
        assert assembler.buffered <= 4 * JBD.definition.framing.max_length + 64


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([BASIC, CELLS, bytes.fromhex(CAPTURE_4S_BASIC)]),
    st.lists(st.tuples(st.integers(min_value=0, max_value=80), st.integers(min_value=0, max_value=255)), max_size=6),
    st.integers(min_value=0, max_value=80),
)
def test_fuzz_decoder_with_mutated_valid_frames(frame: bytes, mutations: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(frame)
    for position, value in mutations:
        if position < len(data):
            data[position] = value
    # Recompute the checksum half of the time so mutations reach the field decoders.
    if len(data) > 7 and mutations and mutations[0][1] % 2:
        data[-3:-1] = ((0x10000 - sum(data[2:-3])) & 0xFFFF).to_bytes(2, "big")
    candidate = bytes(data[: len(data) - cut]) if cut < len(data) else bytes(data)
    try:
        decode(JBD, [candidate], timestamp=0)
    except BmsgateError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    cells=st.integers(min_value=1, max_value=32),
    ntc=st.integers(min_value=0, max_value=8),
    soc=st.floats(min_value=0, max_value=100),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_simulated_replies_round_trip_through_any_chunking(cells: int, ntc: int, soc: float, chunk: int) -> None:
    pack = PackModel(PackConfig(cells=cells, ntc_count=ntc, initial_soc=soc))
    state = pack.state()
    data = JBD.encode_reply(0x03, state) + JBD.encode_reply(0x04, state)
    assembler = JBD.new_assembler()
    frames = []
    for piece in _chunks(data, chunk):
        frames += assembler.feed(piece)
    snapshot = decode(JBD, frames, timestamp=0)
    assert snapshot.cell_voltages == pytest.approx(state["cell_voltages"], abs=0.0011)
    assert len(snapshot.temperatures) == ntc
    assert snapshot.voltage == pytest.approx(state["voltage"], abs=0.011)
    assert snapshot.soc == pytest.approx(state["soc"], abs=0.5)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1200))
def test_byte_sum_is_the_sum_of_the_bytes(data: bytes) -> None:
    assert byte_sum(data) == sum(data)
    assert byte_sum(bytearray(data)) == byte_sum(memoryview(data)) == sum(data)
    assert byte_sum(b"\xff" * 4096) == 255 * 4096


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=1200), st.data())
def test_span_sums_of_a_frame_are_the_masked_sum_of_its_range(frame: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(frame) - 1))
    stop = data.draw(st.integers(start, len(frame)))
    for mask in (0xFF, 0xFFFF):
        summed = span_sum(start, stop, mask)
        if stop - start <= 256:
            assert summed is None  # one span: the checker slices and sums as before
        else:
            assert summed is not None
            assert summed(frame) == sum(frame[start:stop]) & mask
            assert summed(b"\xff" * len(frame)) == (255 * (stop - start)) & mask


def _crc16_modbus_bitwise(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_word_at_a_time_crc16_is_crc16_modbus(data: bytes) -> None:
    assert crc16_modbus(data) == crc16_modbus(bytearray(data)) == _crc16_modbus_bitwise(data)
    assert crc16_modbus(b"123456789") == 0x4B37  # the catalogue check value of CRC-16/MODBUS


def _crc16_xmodem_bitwise(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_table_crc16_xmodem_is_the_bitwise_one(data: bytes) -> None:
    xmodem = CHECKSUMS["crc16_xmodem"].compute
    assert xmodem(data) == xmodem(bytearray(data)) == _crc16_xmodem_bitwise(data)
    assert xmodem(b"123456789") == 0x31C3  # the catalogue check value of CRC-16/XMODEM
