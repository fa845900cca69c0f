"""Allpowers: a settings notification between status frames is dropped, never read as a status."""

from __future__ import annotations

from bmsgate.protocols import get_protocol

from .family_frames import ALLPOWERS

# aiobmsble tests/bms/test_allpowers_bms.py _FRAME_SETTINGS: the same A5 65 B1 start, 11 bytes.
SETTINGS = bytes.fromhex("a565b100010603") + b"\x02\x01\xab\x00"


def test_a_settings_notification_is_dropped_as_too_short() -> None:
    protocol = get_protocol("allpowers")
    assembler = protocol.new_assembler()
    assert assembler.feed(SETTINGS) == []
    assert assembler.stats.last_error == "a chunk of 11 bytes, outside 15..64"
    status = ALLPOWERS.replies["status"][0]
    frames = assembler.feed(status)
    assert [frame.key for frame in frames] == [0xA5]
    assert protocol.decode(frames, battery_id="ap", timestamp=0.0).soc == 72


def test_no_pack_voltage_or_switch_state_is_guessed() -> None:
    protocol = get_protocol("allpowers")
    frames = protocol.new_assembler().feed(ALLPOWERS.replies["status"][0])
    snapshot = protocol.decode(frames, battery_id="ap", timestamp=0.0)
    assert snapshot.voltage is None and snapshot.current is None
    assert snapshot.charge_enabled is None and snapshot.discharge_enabled is None
    assert snapshot.extras["ac_output"] is True and snapshot.extras["dc_output"] is True
