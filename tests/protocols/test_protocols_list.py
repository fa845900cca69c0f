"""``bmsgate protocols list --json``: every built-in with its verified flag, variants and matchers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bmsgate.app.cli.main import main
from bmsgate.catalog import Kind, default_catalog

from .vectorgen import VECTORS


def _rows(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    assert main(["protocols", "list", "--json"]) == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def test_every_builtin_is_listed_with_a_verified_flag(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(capsys)
    catalog = default_catalog()
    assert set(rows) == set(catalog.names(Kind.PROTOCOL)) | set(catalog.protocol_aliases())
    for name, row in rows.items():
        assert isinstance(row["verified"], bool), name
        real = any(
            json.loads(path.read_text(encoding="utf-8"))["real_frames"]
            for path in (VECTORS / name).glob("decode-*.json")
        )
        assert row["verified"] == real, name
        assert (row["evidence"] is not None) == row["verified"], name


def test_variants_and_matchers_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(capsys)
    assert rows["jk"]["variants"] == ["jk02_24s", "jk02_32s"]
    assert rows["jbd"]["variants"] == []
    assert {"local_name": "RNGRBP*", "manufacturer_id": 0xE14C} in rows["renogy-pro"]["matchers"]
    assert rows["daly-a5"]["verified"] is False  # its vectors are built from the documented layout


def test_the_text_listing_says_verified_or_unverified(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "unverified" in lines["daly-a5"]
    assert " verified " in lines["jbd"] + " "


def test_aliases_are_listed_with_the_protocol_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(capsys)
    assert rows["ag"]["same_as"] == "ej"
    assert rows["ag"]["verified"] is True  # its own capture: spec/vectors/ag/
    assert rows["redodo"]["same_as"] == "litime"
    assert rows["eleksol"]["same_as"] == "jbd"
    assert rows["eleksol"]["verified"] is False  # no frame of an Eleksol pack anywhere: jbd's are not its
    assert rows["dyness-jun"]["same_as"] == "jbd"
    assert rows["dyness-jun"]["verified"] is False  # aiobmsble's test holds no frames
    assert rows["superb-v2"]["verified"] is True
    assert rows["ej"]["same_as"] is None
    assert "ag" in rows["ej"]["aliases"]
    # An alias is decoded and discovered by its protocol: the same matchers, GATT service and alarms.
    for field in ("matchers", "ble_service", "alarms", "variants", "serial"):
        assert rows["ag"][field] == rows["ej"][field], field
    assert {"local_name": "AG???L*", "manufacturer_id": 21320} in rows["ag"]["matchers"]


def test_the_text_listing_names_the_protocol_of_an_alias(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "(same as ej)" in lines["ag"]
    assert "unverified" in lines["eleksol"]
    assert "unverified" in lines["dyness-jun"]
