"""Register maps: the shipped maps, encoding, and validation errors that name file, entry and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bmsgate.catalog import Kind, default_catalog
from bmsgate.errors import DefinitionError
from bmsgate.inverter.bank import PackInput, aggregate
from bmsgate.inverter.limits import LimitEngine
from bmsgate.inverter.modbus import RegisterKind, RegisterMap, load_register_map
from bmsgate.inverter.modbus.registermap import contiguous_runs
from bmsgate.inverter.status import BankStatus, InverterStatus, initial_status
from bmsgate.model import Alarm, BatterySnapshot

from .helpers import make_snapshot

H = RegisterKind.HOLDING


def status_for(*snapshots: BatterySnapshot, stale: bool = False, heartbeat: int = 7) -> InverterStatus:
    bank = aggregate([PackInput(s.battery_id, s, stale=stale) for s in snapshots])
    limits = LimitEngine().update(bank, 0.0)
    return InverterStatus(bank=bank, limits=limits, heartbeat=heartbeat, inverter_present=True)


def words_to_text(words: list[int]) -> str:
    return b"".join(w.to_bytes(2, "big") for w in words).rstrip(b"\0").decode("ascii")


def test_builtin_maps_are_listed_and_load() -> None:
    assert {"generic", "byd-hvm-fronius"} <= set(default_catalog().names(Kind.REGISTER_MAP))
    for name in default_catalog().names(Kind.REGISTER_MAP):
        assert load_register_map(name).name == name


def test_generic_map_encodes_the_documented_registers() -> None:
    status = status_for(make_snapshot(alarms=frozenset({Alarm.CELL_OVERVOLTAGE, Alarm.LOW_SOC})))
    image = load_register_map("generic").encode(status)[H]
    assert image[0x0100] == 50  # SoC %
    assert image[0x0101] == 5280  # 52.80 V
    assert image[0x0102] == 0x10000 - 1230  # -12.30 A, two's complement
    assert image[0x0103] == 210  # 21.0 degC mean
    assert image[0x0104] == 5520  # CVL 55.20 V
    assert image[0x0105] == 0  # a cell over-voltage protection blocks charging
    assert image[0x0106] == 1000  # DCL 100.0 A
    assert image[0x0107] == (1 << 0) | (1 << 9) | (1 << 12)  # over-voltage, low SoC, charge disabled
    assert image[0x0108] == 3  # fault: protection active
    assert image[0x0109] == 7  # heartbeat counter
    assert image[0x010D] == image[0x010E] == 3300  # cell mV
    assert (image[0x0115] << 16 | image[0x0116]) == (round(52.8 * -12.3) & 0xFFFF_FFFF)  # s32 power
    input_image = load_register_map("generic").encode(status)[RegisterKind.INPUT]
    assert input_image[0x0100] == 50
    assert 0x0117 not in image  # the inverter's heartbeat register is never overwritten


def test_generic_map_when_stale() -> None:
    status = status_for(make_snapshot(), stale=True)
    image = load_register_map("generic").encode(status)[H]
    assert image[0x0105] == image[0x0106] == 0
    assert image[0x0107] & (1 << 15)
    assert image[0x0108] == 4
    assert status.state is BankStatus.STALE


def test_stale_measurements_show_the_last_fresh_bank() -> None:
    register_map = load_register_map("generic")
    fresh = status_for(make_snapshot())
    stale = status_for(make_snapshot(), stale=True)
    image = register_map.encode(stale, last_fresh=fresh.bank)[H]
    assert image[0x0100] == 50  # SoC held
    assert image[0x0101] == 5280  # voltage held
    assert image[0x0103] == 210  # temperature held
    assert image[0x010D] == image[0x010E] == 3300  # cell min / max held
    assert image[0x010F] == 200 and image[0x0110] == 220
    assert image[0x010A] == 98  # SoH held
    assert image[0x0105] == image[0x0106] == 0  # limits never held
    assert image[0x0107] & (1 << 15)  # stale bit
    assert image[0x0108] == 4  # status stale
    assert image[0x0109] == 7  # heartbeat as given (the sink freezes it)
    assert image[0x010B] == 0  # packs online is current, not held
    assert image[0x0114] == 0  # direction idle
    assert register_map.encode(stale, last_fresh=fresh.bank)[RegisterKind.INPUT][0x0100] == 50
    # Without a fresh bank ever seen, measurements read their missing value.
    bare = register_map.encode(stale)[H]
    assert bare[0x0100] == bare[0x0101] == bare[0x0103] == bare[0x010D] == 0
    # A fresh bank is shown as is; last_fresh does not override it.
    other = status_for(make_snapshot(soc=70.0))
    assert register_map.encode(other, last_fresh=fresh.bank)[H][0x0100] == 70


def test_stale_power_limits_are_zero_and_explicit_stale_values_win() -> None:
    byd = load_register_map("byd-hvm-fronius")
    fresh = status_for(make_snapshot())
    image = byd.encode(status_for(make_snapshot(), stale=True), last_fresh=fresh.bank)[H]
    assert image[300] == 4  # fault
    assert image[303] == 5000 and image[308] == 528  # SoC 50.00 %, 52.8 V held
    assert image[306] == image[307] == 0  # power limits 0, not missing
    custom = make_map(
        {"name": "soc", "address": 0, "source": "soc", "stale": 0xFFFF},
        {"name": "voltage", "address": 1, "source": "voltage", "scale": 0.1},
    )
    held = custom.encode(status_for(make_snapshot(), stale=True), last_fresh=fresh.bank)[H]
    assert held == {0: 0xFFFF, 1: 528}


@pytest.mark.parametrize(
    ("soc", "soh", "generic", "byd"),
    [(255.0, 300.0, (100, 100), (10000, 10000)), (-5.0, -1.0, (0, 0), (100, 0)), (42.4, 99.5, (42, 100), (4240, 9950))],
)
def test_shipped_maps_clamp_out_of_range_percentages(
    soc: float, soh: float, generic: tuple[int, int], byd: tuple[int, int]
) -> None:
    status = status_for(make_snapshot(soc=soc, soh=soh))
    image = load_register_map("generic").encode(status)
    assert (image[H][0x0100], image[H][0x010A]) == generic
    assert image[RegisterKind.INPUT][0x0100] == generic[0]
    byd_image = load_register_map("byd-hvm-fronius").encode(status)[H]
    assert (byd_image[303], byd_image[323]) == byd


def test_byd_map() -> None:
    register_map = load_register_map("byd-hvm-fronius")
    layout = register_map.layout()[H]
    assert layout[100] == 0x5349
    assert words_to_text([layout[a] for a in range(102, 118)]) == "BYD"
    assert words_to_text([layout[a] for a in range(118, 134)]) == "BYD Battery-Box Premium HV"
    assert all(a in layout for a in range(300, 324))
    charging = status_for(make_snapshot(current=10.0, soc=0.4))
    image = register_map.encode(charging)[H]
    assert image[302] == 129
    assert image[303] == 100  # SoC kept at >= 1.00 %
    assert image[309] == 0x10000 - 528  # charging power is negative
    assert image[300] == 3
    assert register_map.heartbeat_in is not None
    assert register_map.heartbeat_in.address == 401


def test_starting_layout_reads_as_missing() -> None:
    image = load_register_map("generic").encode(initial_status(("a",)))[H]
    assert image[0x0100] == 0
    assert image[0x0108] == 0  # starting


BASE: dict[str, Any] = {"name": "t", "address_base": 0, "registers": []}


def make_map(*registers: dict[str, Any], **top: Any) -> RegisterMap:
    return RegisterMap.from_dict(BASE | {"registers": list(registers)} | top, source="t.yaml")


def test_types_scale_offset_word_order_and_clamping() -> None:
    register_map = make_map(
        {"name": "k", "address": 0, "source": "temperature", "offset": 273.15, "scale": 0.1},
        {"name": "big", "address": 1, "source": "constant", "value": 0x12345, "type": "u32"},
        {"name": "little", "address": 3, "source": "constant", "value": 0x12345, "type": "u32", "word_order": "little"},
        {"name": "neg", "address": 5, "source": "constant", "value": -2, "type": "s32"},
        {"name": "floor", "address": 7, "source": "constant", "value": -5},
        {"name": "ceiling", "address": 8, "source": "constant", "value": 40000, "type": "s16"},
        {"name": "clamped", "address": 9, "source": "soc", "max": 30},
        {"name": "gone", "address": 10, "source": "mosfet_temperature", "missing": 0xFFFF},
        {"name": "held", "address": 11, "source": "soc", "stale": 0x8000},
        {"name": "ir", "address": 0, "kind": "input", "source": "packs_online"},
    )  # fmt: skip
    image = register_map.encode(status_for(make_snapshot(mosfet_temperature=None)))
    holding = image[H]
    assert holding[0] == 2942  # 21.0 degC in 0.1 K
    assert [holding[1], holding[2]] == [0x0001, 0x2345]
    assert [holding[3], holding[4]] == [0x2345, 0x0001]
    assert [holding[5], holding[6]] == [0xFFFF, 0xFFFE]
    assert holding[7] == 0
    assert holding[8] == 0x7FFF
    assert holding[9] == 30
    assert holding[10] == 0xFFFF
    assert holding[11] == 50
    assert image[RegisterKind.INPUT][0] == 1
    assert register_map.encode(status_for(make_snapshot(), stale=True))[H][11] == 0x8000


def test_address_base_one() -> None:
    register_map = make_map({"name": "soc", "address": 40001, "source": "soc"}, address_base=1)
    assert register_map.entry("soc").address == 40000


def test_contiguous_runs() -> None:
    assert contiguous_runs({1: 10, 2: 20, 5: 50}) == [(1, [10, 20]), (5, [50])]
    assert contiguous_runs(dict.fromkeys(range(5), 0), max_length=2) == [(0, [0, 0]), (2, [0, 0]), (4, [0])]


@pytest.mark.parametrize(
    ("registers", "top", "field", "reason"),
    [
        ([{"name": "x", "address": 1, "source": "socc"}], {}, "registers[0] (x).source", "unknown source 'socc'"),
        ([{"name": "x", "address": 1, "source": "soc", "scale": 0}], {}, "registers[0] (x).scale", "non-zero"),
        ([{"name": "x", "address": 1, "source": "soc"}, {"name": "y", "address": 1, "source": "voltage"}], {},
         "registers[1] (y)", "already used by 'x'"),
        ([{"name": "x", "address": 1, "source": "soc", "type": "u32"}, {"name": "y", "address": 2, "source": "soc"}],
         {}, "registers[1] (y)", "already used by 'x'"),
        ([{"name": "x", "address": 1, "source": "soc"}, {"name": "x", "address": 2, "source": "soc"}], {},
         "registers[1] (x)", "duplicate register name"),
        ([{"name": "x", "address": 1, "source": "text", "type": "ascii", "length": 1, "text": "abc"}], {},
         "registers[0] (x)", "at most 2 characters"),
        ([{"name": "x", "address": 1, "source": "alarms", "bits": {0: "cell_overvoltag"}}], {},
         "registers[0] (x)", "unknown alarm or flag 'cell_overvoltag'"),
        ([{"name": "x", "address": 1, "source": "alarms", "bits": {16: "stale"}}], {},
         "registers[0] (x)", "does not fit"),
        ([{"name": "x", "address": 1, "source": "status", "values": {"ok": 1}}], {},
         "registers[0] (x)", "must map every status state"),
        ([{"name": "x", "address": 1, "source": "direction"}], {}, "registers[0] (x)", "'values' goes with"),
        ([{"name": "x", "address": 1, "source": "constant"}], {}, "registers[0] (x)", "needs 'value'"),
        ([{"name": "x", "address": 0, "source": "soc"}], {"address_base": 1}, "registers[0] (x)", "outside 0..65535"),
        ([{"name": "x", "address": 1, "source": "heartbeat_in", "kind": "input"}], {}, "registers[0] (x)",
         "must be a holding register"),
        ([{"name": "x", "address": 1, "source": "soc", "colour": "red"}], {}, "registers[0] (x).colour",
         "Extra inputs are not permitted"),
        ([], {}, "registers", "at least 1 item"),
        ([{"name": "x", "address": 1, "source": "soc", "min": 100, "max": 0}], {}, "registers[0] (x)",
         "min 100 is above max 0"),
    ],
    ids=["unknown-source", "zero-scale", "overlap", "overlap-u32", "duplicate-name", "text-too-long", "bad-alarm",
         "bit-too-high", "incomplete-values", "values-missing", "constant-without-value", "below-base",
         "heartbeat-in-input", "unknown-key", "no-registers", "min-above-max"],
)  # fmt: skip
def test_invalid_maps_name_file_entry_and_reason(
    registers: list[dict[str, Any]], top: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        make_map(*registers, **top)
    assert caught.value.source == "t.yaml"
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"t.yaml: {field}: ")


def test_map_files(tmp_path: Path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\naddress_base: 0\nregisters:\n  - {name: soc, address: 5, source: soc}\n")
    assert load_register_map(good).layout()[H] == {5: 0}
    assert load_register_map(str(good)).source == str(good)

    with pytest.raises(DefinitionError, match="cannot read the file"):
        load_register_map(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(DefinitionError, match=r"line \d+, column \d+: invalid YAML"):
        load_register_map(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("- just a list\n")
    with pytest.raises(DefinitionError) as caught:
        load_register_map(wrong)
    assert caught.value.source == str(wrong)
