"""``bmsgate inverters list``: every profile with its transport, the inverters it fits and its verification."""

from __future__ import annotations

import json

import pytest

from bmsgate.app.cli.main import main

CAN_DIALECTS = {"deye", "victron", "goodwe-lv", "solis-lv", "luxpower", "sofar", "schneider", "pylon-v13"}


def test_json_lists_can_rs485_and_modbus(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inverters", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {(row["transport"], row["name"]): row for row in rows}
    assert {row["transport"] for row in rows} == {"CAN", "RS485", "Modbus"}
    assert {("CAN", name) for name in CAN_DIALECTS} <= set(by_name)
    assert {("RS485", name) for name in ("voltronic", "srne", "easun-smx2", "pylontech")} <= set(by_name)
    assert ("Modbus", "generic") in by_name
    voltronic = by_name["RS485", "voltronic"]
    assert any("Axpert" in inverter for inverter in voltronic["inverters"])
    assert voltronic["battery_type"].startswith("PYL")
    assert "61" in voltronic["on_lost_communication"]
    assert by_name["CAN", "pylon-v13"]["real_frames"] is True
    assert by_name["CAN", "deye"]["real_frames"] is False
    assert by_name["RS485", "pylontech"]["real_frames"] is True
    for row in rows:
        if row["transport"] != "Modbus":
            assert row["inverters"] and row["verified"], row["name"]


def test_table_filtered_by_transport(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inverters", "list", "--transport", "rs485"]) == 0
    out = capsys.readouterr().out
    assert "voltronic" in out and "srne" in out
    assert "deye" not in out and "generic" not in out
