"""Protocol aliases: a family id that is another protocol with other discovery data (``aliases:``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmsgate.app.config import config_from_mapping
from bmsgate.catalog import BUILTIN_DIR, Catalog, Kind, default_catalog
from bmsgate.errors import DefinitionError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import definition_from_text

EJ = (BUILTIN_DIR / "protocols" / "ej.yaml").read_text(encoding="utf-8")


def test_an_alias_resolves_to_its_protocol() -> None:
    assert default_catalog().get(Kind.PROTOCOL, "ag") is default_catalog().get(Kind.PROTOCOL, "ej")
    assert get_protocol("ag") is get_protocol("ej")
    assert get_protocol("eleksol").name == "jbd"
    assert get_protocol("dyness-jun").name == "jbd"
    assert get_protocol("redodo").name == "litime"
    assert get_protocol("ective").name == "topband"
    assert get_protocol("nordicnus").name == "ej"


def test_a_config_may_name_an_alias() -> None:
    config = config_from_mapping(
        {"batteries": [{"id": "van", "protocol": "ag", "transport": {"type": "ble", "address": "AA:BB:CC:DD:EE:FF"}}]}
    )
    assert config.batteries[0].protocol == "ag"


def test_an_unknown_name_lists_the_aliases_too() -> None:
    with pytest.raises(
        DefinitionError,
        match=(
            r"available: abc, .*\bant\b.*\bej\b.*; "
            r"aliases: ag \(ej\), dyness-jun \(jbd\), ective \(topband\), eleksol \(jbd\)"
        ),
    ):
        default_catalog().get(Kind.PROTOCOL, "no-such-family")


def test_a_file_named_like_an_alias_wins_over_the_alias(tmp_path: Path) -> None:
    own = EJ.replace("name: ej\n", "name: ag\n").replace("aliases:\n  - id: ag\n", "aliases:\n  - id: ag-old\n")
    folder = tmp_path / "etc" / "protocols"
    folder.mkdir(parents=True)
    (folder / "ag.yaml").write_text(own, encoding="utf-8")
    catalog = Catalog(system_dir=tmp_path / "etc")
    assert catalog.get(Kind.PROTOCOL, "ag").name == "ag"
    assert catalog.get(Kind.PROTOCOL, "ag-old").name == "ag"


def test_an_alias_is_part_of_the_identity() -> None:
    renamed = definition_from_text(EJ.replace("  - id: ag\n", "  - id: ag2\n"))
    assert renamed.sha256 != get_protocol("ej").definition.sha256
    assert any(alias["id"] == "ag" for alias in get_protocol("ej").definition.ir()["aliases"])


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (("  - id: ag\n", "  - id: ej\n"), "repeats the definition's name"),
        (("  - id: ag\n", "  - id: AG\n"), "lowercase"),
        (("requires: [absent, aliases, ", "requires: [absent, "), "does not list it"),
    ],
)
def test_bad_aliases_are_refused_with_a_reason(edit: tuple[str, str], reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        definition_from_text(EJ.replace(*edit))


def test_two_aliases_of_one_id_are_refused() -> None:
    doubled = EJ.replace("  - id: ag\n", "  - id: ag\n    title: again\n  - id: ag\n", 1)
    with pytest.raises(DefinitionError, match="repeats"):
        definition_from_text(doubled)
