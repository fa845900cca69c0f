"""``bmsgate catalog list/show`` and ``bmsgate protocols show``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bmsgate.app.cli.main import main
from bmsgate.catalog import BUILTIN_DIR


def test_catalog_list_json_shows_every_item(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["catalog", "list", "--json", "--system-dir", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["kind"] for row in rows} == {"protocol", "register-map", "can-profile"}
    jbd = next(row for row in rows if row["name"] == "jbd")
    assert set(jbd) == {"kind", "name", "version", "sha256", "layer", "path"}
    assert jbd["layer"] == "builtin"


def test_catalog_list_table_and_shadowed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "modbus"
    folder.mkdir()
    (folder / "generic.yaml").write_text((BUILTIN_DIR / "modbus" / "generic.yaml").read_text(encoding="utf-8"))
    assert main(["catalog", "list", "--kind", "register-map", "--all", "--system-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count(" generic ") == 2  # the builtin row and the system row that shadows it
    assert "system:" in out
    assert "builtin:" in out


def test_catalog_show_json_is_the_canonical_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "show", "can-profile", "pylon", "--json"]) == 0
    out = capsys.readouterr().out.removesuffix("\n")
    assert "dbc_text" in json.loads(out)
    assert main(["catalog", "show", "can-profile", "pylon"]) == 0
    summary = capsys.readouterr().out
    assert hashlib.sha256(out.encode()).hexdigest() in summary
    assert "0x351" in summary


def test_protocols_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols", "show", "jbd", "--json"]) == 0
    ir = json.loads(capsys.readouterr().out)
    assert ir["name"] == "jbd"
    assert "requires" in ir
    assert main(["protocols", "show", "jbd"]) == 0
    out = capsys.readouterr().out
    assert "requires" in out
    assert "sha256" in out


def test_show_unknown_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "show", "register-map", "nope"]) == 2
    assert "no register map named 'nope'; available: byd-hvm-fronius, generic" in capsys.readouterr().err


def test_show_refuses_a_profile_the_engine_cannot_build(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # It passes the schema, so it has a sha256, but its frame is not in the DBC: never show an identity
    # for an item a gateway would refuse.
    text = (BUILTIN_DIR / "can" / "pylon.yaml").read_text(encoding="utf-8")
    (tmp_path / "pylon.dbc").write_text((BUILTIN_DIR / "can" / "pylon.dbc").read_text(encoding="utf-8"))
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("frames: [", "frames: [0x999, ", 1), encoding="utf-8")
    assert "0x999" in broken.read_text(encoding="utf-8")
    assert main(["catalog", "show", "can-profile", str(broken), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "broken.yaml" in captured.err
