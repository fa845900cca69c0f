"""``bmsgate scan`` and ``bmsgate probe`` against the fake radio."""

from __future__ import annotations

import json

import pytest

from bmsgate.app.cli import ble as commands
from bmsgate.app.cli import main as cli
from bmsgate.catalog import default_catalog
from bmsgate.protocols import get_protocol
from bmsgate.runtime.simulation import PackConfig
from bmsgate.testing import FakeBleakClient, FakeBluetooth, FakePeripheral, FaultPlan

JBD = get_protocol("jbd")


@pytest.fixture
def radio(monkeypatch: pytest.MonkeyPatch) -> FakeBluetooth:
    environment = FakeBluetooth(
        [
            FakePeripheral(JBD, "A4:C1:37:00:00:01", name="JBD-SP04S034", rssi=-58, pack=PackConfig(cells=4)),
            FakePeripheral(
                JBD,
                "70:3E:97:00:00:02",
                name="Garage pack",
                service_uuids=[],
                manufacturer_data={0x0B65: b"\x01\x02"},
                rssi=-75,
            ),
            FakePeripheral(JBD, "11:22:33:44:55:66", name="Headphones", service_uuids=["180f"], rssi=-40),
        ],
        adapters=("hci0", "hci1"),
    )
    monkeypatch.setattr(commands, "client_factory", FakeBleakClient)
    monkeypatch.setattr(commands, "scanner_factory", environment.scanner)
    return environment


def test_scan_json(radio: FakeBluetooth, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["scan", "--duration", "0.15", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)
    by_address = {device["address"]: device for device in devices}
    assert by_address["A4:C1:37:00:00:01"]["protocols"] == [{"name": "jbd", "reason": "service ff00"}]
    garage = by_address["70:3E:97:00:00:02"]["protocols"]
    assert {"name": "jbd", "reason": "address 70:3E:97"} in garage
    if "jk" in {protocol.name for protocol in default_catalog().protocols()}:
        # A device may be claimed by several definitions; probe settles it.
        assert {"name": "jk", "reason": "manufacturer 0x0b65"} in garage
    assert by_address["70:3E:97:00:00:02"]["manufacturer_data"] == {"0x0b65": "0102"}
    assert by_address["11:22:33:44:55:66"]["protocols"] == []
    # Claimed devices first, then by signal strength.
    assert [device["address"] for device in devices] == ["A4:C1:37:00:00:01", "70:3E:97:00:00:02", "11:22:33:44:55:66"]


def test_scan_table(radio: FakeBluetooth, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["scan", "--duration", "0.15", "--adapter", "hci1"]) == 0
    out = capsys.readouterr().out
    assert "JBD-SP04S034" in out
    assert "A4:C1:37:00:00:01" in out
    assert "jbd" in out
    assert "-58 dBm" in out


def test_scan_bad_adapter_and_duration(radio: FakeBluetooth, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["scan", "--duration", "0.1", "--adapter", "hci9"]) == 1
    assert "hci9" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects it as a usage error
        cli.main(["scan", "--duration", "0"])
    assert exit_info.value.code == 2
    assert "greater than 0" in capsys.readouterr().err


def test_scan_nothing_heard(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(commands, "scanner_factory", FakeBluetooth().scanner)
    assert cli.main(["scan", "--duration", "0.05"]) == 0
    assert "No Bluetooth LE devices heard" in capsys.readouterr().out


def test_probe_text(radio: FakeBluetooth, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "A4:C1:37:00:00:01", "--timeout", "0.3", "--scan-timeout", "1"]) == 0
    out = capsys.readouterr().out
    assert "Service ff00 (handle 4)" in out
    assert "Characteristic ff01 (handle 6) [read, notify]" in out
    assert "Descriptor 2902 (handle 7)" in out
    assert "← notify (jbd)" in out
    assert "✓ jbd: 4 cells" in out
    assert "Identified: JBD" in out


def test_probe_json_by_name(radio: FakeBluetooth, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "JBD-SP04S034", "--json", "--timeout", "0.3", "--protocol", "jbd"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "jbd"
    assert report["address"] == "A4:C1:37:00:00:01"
    assert report["advertisement"]["rssi"] == -58
    assert report["characteristics"]["notify_handle"] == 6
    assert report["characteristics"]["write_mode"] in {"with_response", "without_response"}
    assert [s["uuid"] for s in report["gatt"]["services"]] == ["1800", "ff00"]
    assert report["snapshot"]["cell_voltages"] and len(report["snapshot"]["cell_voltages"]) == 4
    assert report["attempts"] == [{"protocol": "jbd", "ok": True, "detail": report["attempts"][0]["detail"]}]
    assert radio.peripherals[0].client is None  # disconnected afterwards


def test_probe_silent_device_is_not_identified(radio: FakeBluetooth, capsys: pytest.CaptureFixture[str]) -> None:
    radio.peripherals[0].uart.faults = FaultPlan(silent=True)
    assert cli.main(["probe", "A4:C1:37:00:00:01", "--json", "--timeout", "0.1"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] is None
    assert report["snapshot"] is None
    assert report["attempts"][0]["ok"] is False
    assert "no reply" in report["attempts"][0]["detail"]


def test_probe_unknown_gatt_and_missing_device(radio: FakeBluetooth, capsys: pytest.CaptureFixture[str]) -> None:
    radio.peripherals[2].services = []
    assert cli.main(["probe", "11:22:33:44:55:66", "--timeout", "0.1"]) == 1
    assert "No built-in protocol's GATT profile matches" in capsys.readouterr().out
    assert cli.main(["probe", "AA:BB:CC:DD:EE:FF", "--scan-timeout", "0.1"]) == 1
    assert "no device with address AA:BB:CC:DD:EE:FF" in capsys.readouterr().err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "scan" in out
    assert "probe" in out


def test_probe_identifies_jk_among_ffe0_protocols(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if "jk" not in {protocol.name for protocol in default_catalog().protocols()}:
        pytest.skip("no built-in jk definition")
    jk = get_protocol("jk")
    bms = FakePeripheral(jk, "C8:47:8C:00:00:01", name="JK-B2A24S", layout="duplicate", manufacturer_data={0x0B65: b""})
    monkeypatch.setattr(commands, "client_factory", FakeBleakClient)
    monkeypatch.setattr(commands, "scanner_factory", FakeBluetooth([bms]).scanner)
    assert cli.main(["probe", "C8:47:8C:00:00:01", "--json", "--timeout", "0.3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "jk"
    assert report["attempts"][0]["protocol"] == "jk"  # the advertisement put it first
    assert report["characteristics"]["notify_handle"] != report["characteristics"]["write_handle"]


def test_probe_unlocks_a_dyness_board_and_shows_the_unlock_characteristic(
    radio: FakeBluetooth, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiobmsble dyness_jun_bms.py: JBD behind fe00, answering only after AA 55 01 00 00 56 was written to fed5.
    dyness = radio.add(
        FakePeripheral(
            JBD,
            "AA:BB:CC:00:00:07",
            name="R07-0042",
            profile=len(JBD.gatt_profiles) - 1,
            pack=PackConfig(cells=4),
        )
    )
    assert cli.main(["probe", "AA:BB:CC:00:00:07", "--json", "--timeout", "0.3", "--protocol", "jbd"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "jbd"
    assert report["characteristics"]["service"] == "fe00"
    fed5 = next(
        char["handle"]
        for service in report["gatt"]["services"]
        for char in service["characteristics"]
        if char["uuid"] == "fed5"
    )
    assert report["characteristics"]["connect_write_handles"] == [fed5]
    assert report["characteristics"]["also_notify_handles"] == []
    assert dyness.side_writes == [(dyness.side_writes[0][0], bytes.fromhex("AA5501000056"))]
    assert len(report["snapshot"]["cell_voltages"]) == 4
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["probe", "AA:BB:CC:00:00:07", "--timeout", "0.3", "--protocol", "jbd"]) == 0
    assert "Characteristic fed5 (handle" in (out := capsys.readouterr().out)
    assert "← written on connect (jbd)" in out
