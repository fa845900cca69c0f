"""Dometic: the real two-pack stream of aiobmsble's test, the current's encoding, and a kept-alive fake board.

The stream below is copied byte for byte from ``_PROTO_DEFS`` of patman15/aiobmsble
``tests/bms/test_dometic_bms.py`` (its first device-00 and device-0F rounds with the noise between them: ASCII
``MST+…`` replies, ``23 4D`` and ``23 80`` frames, a 7-byte frame, ``55 …`` frames, a lone ``0A``), one
notification per entry as its mock sends them. ``_RESULT_DEFS["packs"]`` states both packs' values.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import normalize_uuid
from bmsgate.protocols.framing import Frame
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import PackConfig
from bmsgate.testing import FakeBleakClient, FakeBluetooth, FakePeripheral
from bmsgate.transports.ble import BleTransport, ReconnectPolicy
from bmsgate.transports.discovery import Advertisement, match_advertisement

DOMETIC = get_protocol("dometic")

_STREAM = (
    b"#\x85\x00\xf2\x00\x00\x00\x00",
    b"#\x85\x00\x02\x051\x81\x11",
    b"#\x85\x005\nW\x07X",
    b"#\x85\x00V\x0c\xf3\x0c\xf4",
    b"#\x85\x00W\x0c\xf2\x0c\xf0",
    b"#\x85\x00\x0b\\\xff\xff\xff",
    b"#\x85\x006\x07%\xff\xff",
    b"#\x85\x00\x0c\x02\x80\xff\xff",
    b"#\x85\x00\xf1\x00\x00\x00\x00",
    b"#\x85\x00\x90\x02\x0f\x02\x0f",
    b"#\x85\x004\xff\xff\x08\x81",
    b"#\x85\x00\x07\x00\x00\x00\x96",
    b"#\x85\x00\x0ed\x00\x00\x00",
    b"#\x85\x00T\x00KAA",
    b"#\x85\x00\xc0\x00\x00\x00\x00",
    b"#\x85\x00`@\x00\x04\x00",
    b"#\x85\x00U\x00&&\xa3",
    b"#\x85\x00\xa1\x04\x03\x02\x08",
    b"#M\x08\xb1\x84\xb3T\x88",
    b"#M\x01\xb1t\xb2\xfeA",
    b"#M\x0f\xb1L\xb2\xab/",
    b"#\x85\x0f\x02\x050\x81!",
    b"#\x85\x0f\x0b\\\xff\xff\xff",
    b"#\x85\x0f\x0c\x02\x80\xff\xff",
    b"#\x85\x0f\x07\x00\x00\x00\x96",
    b"#\x85\x0f4\xff\xff\t;",
    b"#\x85\x0f\x0ed\x00\x00\x00",
    b"#\x85\x0f5\n\xac\x07l",
    b"#\x85\x0f6\x07\x15\xff\xff",
    b"#\x85\x0f\xc0\x00\x00\x00",  # the source's "invalid length"
    b"#\x85\x0fV\x0c\xee\x0c\xef",
    b"#\x85\x0fW\x0c\xef\x0c\xeb",
    b"#\x85\x0f\x00\x00\x00\x00\x00",
    b"MST+IMP=\xb0\x10%\x00\x00",
    b"MST+IMP=\xb1\x963 \x02",
    b'#\x80\x00\xb1\x963"X',
    b"MST+NET=\x85\x8f\x01\x05\x00\x08\x04\x03\x02\x05\x01",
    b"MST+NET=\x85\x00\x01\x05\x00\x08\x04\x03\x02\x05\x04",
    b'MST+DCO=\x11"3@',
    b"#\x85\x0f\x02\x05.\x81$",
    b"\n",
    b"U<\x80\x02\xb4?\xff\xff\xff\xff\x89",
    b"U}",
    b"\x85\x06\xf4\x02\x050\x81\x11\xb5",
    b"#\x85\x00\x02\x050\x81\x11",  # device 00's newest 02 frame: 13.28 V, -2.74 A
)
_PACK_00 = {
    "voltage": 13.28,
    "current": -2.74,
    "soc": 92,
    "soh": 100,
    "temperatures": [14.0],
    "design_capacity": 150,
    "cell_voltages": [3.315, 3.316, 3.314, 3.312],
}


def _newest_per_request(chunks: tuple[bytes, ...]) -> tuple[list[Frame], int]:
    """What a poll keeps of the stream: each request's newest frame; and how many chunks were dropped."""
    assembler = DOMETIC.new_assembler()
    newest: dict[int | None, Frame] = {}
    for chunk in chunks:
        for frame in assembler.feed(chunk):
            newest[frame.key] = frame
    wanted = [request.reply for request in DOMETIC.requests if request.reply is not None]
    return [newest[key] for key in wanted if key in newest], assembler.stats.rejected


def test_the_two_pack_stream_decodes_to_device_00s_stated_values() -> None:
    frames, rejected = _newest_per_request(_STREAM)
    snapshot = DOMETIC.decode(frames, battery_id="dometic", timestamp=0.0).to_dict()
    for key, stated in _PACK_00.items():
        assert snapshot[key] == pytest.approx(stated), key
    assert snapshot["extras"]["remaining_energy"] == 1829
    noise = [chunk for chunk in _STREAM if len(chunk) != 8 or not chunk.startswith(b"#\x85")]
    assert rejected == len(noise)  # ASCII replies, other heads, other lengths: dropped, one by one


def test_device_0f_frames_are_no_reply_of_the_definition() -> None:
    # One snapshot = one pack: the second pack's frames (device 0F) never stand in for device 00's.
    assembler = DOMETIC.new_assembler()
    replies = set(DOMETIC.definition.replies)
    keys = [frame.key for chunk in _STREAM if chunk[2:3] == b"\x0f" for frame in assembler.feed(chunk)]
    assert keys
    assert all(key is not None and key >> 8 == 0x0F and key not in replies for key in keys)
    only_0f, _ = _newest_per_request(tuple(chunk for chunk in _STREAM if chunk[2:3] != b"\x00"))
    assert only_0f == []


def _current(frame: bytes) -> float:
    snapshot = DOMETIC.decode([DOMETIC.check_frame(frame)], battery_id="dometic", timestamp=0.0)
    assert snapshot.current is not None
    return snapshot.current


@pytest.mark.parametrize(
    ("raw", "amps"),
    [
        (0x8111, -2.74),  # the source's frame 81 11 (aiobmsble: 32767 - 33041 = -274)
        (0x8124, -2.93),  # device 0F's newest 81 24: packs[1] states -2.93 A
        (0x8000, -0.01),
        (0xFFFF, -327.68),
        (0x0111, 2.73),
        (0x0000, 0.0),
        (0x7FFF, 327.67),
    ],
)
def test_the_current_is_minus_magnitude_plus_one_with_bit_15(raw: int, amps: float) -> None:
    frame = bytes.fromhex("2385000205 30") + raw.to_bytes(2, "big")
    assert _current(frame) == pytest.approx(amps)
    # The simulator writes the same encoding back.
    encoded = DOMETIC.encode_reply(0x0002, {"voltage": 13.28, "current": amps})
    assert encoded[6:8] == raw.to_bytes(2, "big")


@settings(max_examples=200, deadline=None)
@given(raw=st.integers(min_value=0, max_value=0xFFFF))
def test_fuzz_every_raw_current_decodes_in_range_and_encodes_back(raw: int) -> None:
    amps = _current(bytes.fromhex("238500020530") + raw.to_bytes(2, "big"))
    assert -327.68 <= amps <= 327.67
    assert (amps < 0) == bool(raw & 0x8000)
    assert DOMETIC.encode_reply(0x0002, {"voltage": 13.28, "current": amps})[6:8] == raw.to_bytes(2, "big")


def test_the_advertisement_identifies_dometic_alone() -> None:
    advertisement = Advertisement(address="AA:BB:CC:00:66:78", manufacturer_data={2117: b"\x14\x85"})
    assert [match.protocol for match in match_advertisement(advertisement, [DOMETIC])] == ["dometic"]


async def test_a_kept_alive_fake_board_is_read_through_the_client() -> None:
    # The fake board's order is aiobmsble's mock's: 000a notifies 9B 00 when subscribed, 0004 notifies 12;
    # requests are ignored until both were answered (0009: the echo, 0003: FF).
    uuid = "0000{}-0000-1000-8000-008025000000".format
    bms = FakePeripheral(
        DOMETIC,
        "AA:BB:CC:00:66:79",
        name=None,
        pack=PackConfig(cells=4, ntc_count=1),
        manufacturer_data={2117: b"\x14\x85"},
        keep_alives={uuid("000a"): b"\x9b\x00", uuid("0004"): b"\x12"},
    )
    radio = FakeBluetooth([bms])
    transport = BleTransport(
        DOMETIC,
        bms.address,
        client_factory=FakeBleakClient,
        scanner_factory=radio.scanner,
        scan_timeout=1.0,
        connect_timeout=2.0,
        reconnect=ReconnectPolicy(attempts=1),
        rng=random.Random(1),
    )
    options = ClientOptions(request_timeout=1.0, retries=1, retry_backoff=0.01, poll_deadline=5.0)
    async with BatteryClient(DOMETIC, transport, options=options) as client:
        snapshot = await client.read()
        await client.read()
    assert bms.answers[:2] == [(normalize_uuid(uuid("0009")), b"\x9b\x00"), (normalize_uuid(uuid("0003")), b"\xff")]
    # Once per connection the two commands, then APP+RDN=1 on every poll.
    assert [frame for frame, _mode in bms.writes] == [b"APP+AEN", b"APP+NET", b"APP+RDN=1", b"APP+RDN=1"]
    assert not bms.dropped_writes
    assert snapshot.cell_count == 4
    assert snapshot.voltage is not None
    assert snapshot.current is not None
