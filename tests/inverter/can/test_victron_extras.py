"""Victron-style extras (0x372, 0x374-0x377), read back by a decoder written from public sources.

Layout (docs/can.md): 0x372 four u16 LE counts (online, blocking charge, blocking discharge, offline);
0x374-0x377 eight ASCII bytes, NUL padded. The decoder uses struct, never the DBC.
"""

from __future__ import annotations

import struct

from bmsgate.inverter.can.profiles import OutputPhase, build_frames, load_profile
from bmsgate.inverter.status import InverterStatus

from .helpers import make_snapshot, make_status

EXTRAS = (0x372, 0x374, 0x375, 0x376, 0x377)


def counts_372(data: bytes) -> tuple[int, int, int, int]:
    online, blocking_charge, blocking_discharge, offline = struct.unpack("<HHHH", data)
    return online, blocking_charge, blocking_discharge, offline


def text_id(data: bytes) -> str:
    assert len(data) == 8
    (raw,) = struct.unpack("8s", data)
    assert isinstance(raw, bytes)
    return raw.rstrip(b"\0").decode("ascii")


def frames(status: InverterStatus, phase: OutputPhase = OutputPhase.NORMAL, *, extras: bool = True) -> dict[int, bytes]:
    profile = load_profile("victron").with_overrides(quirks={"victron_extras": extras})
    return {f.arbitration_id: f.data for f in build_frames(profile, status, phase)}


def test_extras_are_absent_by_default_and_when_the_option_is_off() -> None:
    assert not load_profile("victron").quirks.victron_extras
    assert not set(EXTRAS) & {
        f.arbitration_id for f in build_frames(load_profile("victron"), make_status(), OutputPhase.NORMAL)
    }
    assert not set(EXTRAS) & set(frames(make_status(), extras=False))
    for name in ("pylon", "sma", "deye"):
        sent = {f.arbitration_id for f in build_frames(load_profile(name), make_status(), OutputPhase.NORMAL)}
        assert not set(EXTRAS) & sent


def test_extras_follow_the_regular_set_when_on() -> None:
    sent = list(frames(make_status()))
    assert sent[-5:] == list(EXTRAS)


def test_module_counts_and_extreme_ids_decode_from_the_wire() -> None:
    a = make_snapshot("a", cell_voltages=(3.30,) * 15 + (3.42,), temperatures=(18.0, 25.0), charge_enabled=False)
    b = make_snapshot("b", cell_voltages=(3.30,) * 6 + (3.21,) + (3.30,) * 9, temperatures=(21.0, 26.5))
    c = make_snapshot("c", discharge_enabled=False)
    sent = frames(make_status(a, b, c))
    assert counts_372(sent[0x372]) == (3, 1, 1, 0)
    assert text_id(sent[0x374]) == "P2C07"  # pack 2, cell 7 holds the minimum
    assert text_id(sent[0x375]) == "P1C16"
    assert text_id(sent[0x376]) == "P1T1"
    assert text_id(sent[0x377]) == "P2T2"


def test_safe_phase_reports_every_pack_offline_and_claims_no_ids() -> None:
    status = make_status(make_snapshot("a"), make_snapshot("b"), stale=True)
    sent = frames(status, OutputPhase.SAFE)
    assert counts_372(sent[0x372]) == (0, 0, 0, 2)
    for frame_id in EXTRAS[1:]:
        assert sent[frame_id] == bytes(8)
