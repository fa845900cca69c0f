"""The catalog: search order, shadowing, identity, bad files, missing names, caching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bmsgate.catalog import BUILTIN_DIR, SYSTEM_DIR_ENV, Catalog, Kind, Layer, default_catalog, is_path
from bmsgate.errors import DefinitionError

JBD = (BUILTIN_DIR / "protocols" / "jbd.yaml").read_text(encoding="utf-8")
GENERIC = (BUILTIN_DIR / "modbus" / "generic.yaml").read_text(encoding="utf-8")


def _put(root: Path, folder: str, name: str, text: str) -> Path:
    path = root / folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "etc", tmp_path / "packs"


def test_every_builtin_of_every_kind_is_listed_with_its_identity() -> None:
    catalog = Catalog(system_dir="/nonexistent")
    items = catalog.items()
    kinds = {item.kind for item in items}
    assert kinds == set(Kind)
    for item in items:
        assert item.source.layer is Layer.BUILTIN
        assert len(item.sha256) == 64
        assert item.summary()["sha256"] == item.sha256
        assert item.compiled is item.compiled  # built once
    assert catalog.names(Kind.REGISTER_MAP) == ["byd-hvm-fronius", "generic"]
    assert catalog.names(Kind.CAN_PROFILE) == [
        "deye",
        "goodwe-lv",
        "growatt-lv",
        "luxpower",
        "pylon",
        "pylon-v13",
        "schneider",
        "sma",
        "sofar",
        "solark",
        "solis-lv",
        "victron",
    ]


def test_name_or_path_rule() -> None:
    assert not is_path("jbd")
    assert is_path("./jbd")
    assert is_path("jbd.yaml")
    assert is_path("mine.yml")
    assert is_path(Path("jbd"))


def test_later_layers_shadow_earlier_ones(layers: tuple[Path, Path], tmp_path: Path) -> None:
    system, packs = layers
    _put(system, "protocols", "jbd", JBD)
    catalog = Catalog(system_dir=system, packs_dir=packs)
    assert catalog.get(Kind.PROTOCOL, "jbd").source.layer is Layer.SYSTEM
    pack_file = _put(packs, "protocols", "jbd", JBD.replace("\ntitle: ", "\nversion: '7'\ntitle: ", 1))
    item = catalog.get(Kind.PROTOCOL, "jbd")
    assert item.source.layer is Layer.PACK
    assert item.source.path == str(pack_file)
    assert item.version == "7"
    # An explicit file wins over every name: it is the last layer.
    explicit = tmp_path / "mine.yaml"
    explicit.write_text(JBD.replace("\nname: jbd", "\nname: mine", 1), encoding="utf-8")
    assert catalog.get(Kind.PROTOCOL, str(explicit)).source.layer is Layer.FILE
    everything = catalog.items(Kind.PROTOCOL, shadowed=True)
    assert [i.source.layer for i in everything if i.name == "jbd"] == [Layer.BUILTIN, Layer.SYSTEM, Layer.PACK]
    assert [i.name for i in catalog.items(Kind.PROTOCOL)].count("jbd") == 1


def test_system_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _put(tmp_path, "modbus", "house", GENERIC.replace("name: generic", "name: house"))
    monkeypatch.setenv(SYSTEM_DIR_ENV, str(tmp_path))
    item = Catalog().get(Kind.REGISTER_MAP, "house")
    assert item.source.layer is Layer.SYSTEM
    assert item.name == "house"


def test_identity_ignores_spelling_but_not_meaning(tmp_path: Path) -> None:
    builtin = Catalog(system_dir="/nonexistent").get(Kind.PROTOCOL, "jbd")
    respelled = tmp_path / "jbd.yaml"
    # Comments, key order and an explicit default do not change what the file means.
    respelled.write_text("# a comment\nendian: big\n" + JBD.replace("\nendian: big\n", "\n"), encoding="utf-8")
    assert Catalog().load_file(Kind.PROTOCOL, respelled).sha256 == builtin.sha256
    changed = tmp_path / "changed.yaml"
    changed.write_text(JBD.replace("\ntitle: ", "\nversion: '2'\ntitle: ", 1), encoding="utf-8")
    assert Catalog().load_file(Kind.PROTOCOL, changed).sha256 != builtin.sha256


def test_the_canonical_ir_loads_back_as_a_file(tmp_path: Path) -> None:
    # JSON is YAML: a pushed pack can carry the canonical IR itself.
    catalog = Catalog(system_dir="/nonexistent")
    for item in catalog.items():
        path = tmp_path / item.kind.value / f"{item.name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(item.canonical_json())
        again = Catalog().load_file(item.kind, path)
        assert again.sha256 == item.sha256
        assert again.canonical_json() == item.canonical_json()


def test_missing_name_lists_what_is_available(layers: tuple[Path, Path]) -> None:
    system, packs = layers
    _put(system, "can", "mine", "name: mine\n")
    with pytest.raises(
        DefinitionError,
        match=r"no CAN profile named 'nope'; available: deye, goodwe-lv, growatt-lv, luxpower, mine, pylon",
    ) as info:
        Catalog(system_dir=system, packs_dir=packs).get(Kind.CAN_PROFILE, "nope")
    assert str(system / "can") in str(info.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: [unclosed\n", "invalid YAML"),
        ("- a list\n", "mapping"),
        (GENERIC.replace("name: generic", "name: other"), "file is named 'broken' but its name is 'other'"),
        ("format: 9\nname: broken\n", "register-map format 9 is not supported"),
    ],
    ids=["yaml", "not-a-mapping", "name-mismatch", "newer-format"],
)
def test_bad_files_raise_definition_errors_naming_the_file(tmp_path: Path, text: str, reason: str) -> None:
    path = _put(tmp_path, "modbus", "broken", text)
    with pytest.raises(DefinitionError, match=reason) as info:
        Catalog(system_dir=tmp_path).get(Kind.REGISTER_MAP, "broken")
    assert info.value.source == str(path)


def test_unreadable_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read the file"):
        Catalog().load_file(Kind.PROTOCOL, tmp_path / "missing.yaml")


def test_a_changed_file_is_reloaded(tmp_path: Path) -> None:
    path = _put(tmp_path, "modbus", "house", GENERIC.replace("name: generic", "name: house"))
    catalog = Catalog(system_dir=tmp_path)
    first = catalog.get(Kind.REGISTER_MAP, "house")
    assert catalog.get(Kind.REGISTER_MAP, "house") is first
    path.write_text(GENERIC.replace("name: generic", "name: house\nversion: '2'"), encoding="utf-8")
    second = catalog.get(Kind.REGISTER_MAP, "house")
    assert second.version == "2"
    assert second.sha256 != first.sha256


def test_can_profile_ir_embeds_its_dbc(tmp_path: Path) -> None:
    item = Catalog(system_dir="/nonexistent").get(Kind.CAN_PROFILE, "pylon")
    ir = json.loads(item.canonical_json())
    assert ir["dbc"] == "pylon.dbc"
    assert ir["dbc_text"] == (BUILTIN_DIR / "can" / "pylon.dbc").read_text(encoding="utf-8")
    # A different DBC beside an otherwise identical profile is a different item.
    shutil.copy(BUILTIN_DIR / "can" / "pylon.yaml", tmp_path / "pylon.yaml")
    dbc = (BUILTIN_DIR / "can" / "pylon.dbc").read_text(encoding="utf-8")
    (tmp_path / "pylon.dbc").write_text(dbc.replace('"degC"', '"C"'), encoding="utf-8")
    assert Catalog().load_file(Kind.CAN_PROFILE, tmp_path / "pylon.yaml").sha256 != item.sha256


def test_public_loaders_go_through_the_default_catalog() -> None:
    from bmsgate import get_protocol
    from bmsgate.inverter.modbus import load_register_map

    assert get_protocol("jbd") is default_catalog().protocol("jbd")
    assert load_register_map("generic") is default_catalog().register_map("generic")
    with pytest.raises(DefinitionError, match="is a path"):
        get_protocol("some/file.yaml")


def test_a_path_object_is_a_file_whatever_its_name(tmp_path: Path) -> None:
    from bmsgate import load_protocol_file

    odd = tmp_path / "jbd"  # no suffix, no slash once relative: still a file when given as a Path
    odd.write_text(JBD.replace("\nname: jbd", "\nname: odd", 1), encoding="utf-8")
    assert load_protocol_file(odd).name == "odd"
    assert default_catalog().get(Kind.PROTOCOL, odd).source.layer is Layer.FILE


def test_an_edited_dbc_beside_an_unchanged_profile_is_reloaded(tmp_path: Path) -> None:
    shutil.copy(BUILTIN_DIR / "can" / "pylon.yaml", tmp_path / "pylon.yaml")
    dbc = (BUILTIN_DIR / "can" / "pylon.dbc").read_text(encoding="utf-8")
    (tmp_path / "pylon.dbc").write_text(dbc, encoding="utf-8")
    catalog = Catalog(system_dir="/nonexistent")
    first = catalog.load_file(Kind.CAN_PROFILE, tmp_path / "pylon.yaml")
    assert catalog.load_file(Kind.CAN_PROFILE, tmp_path / "pylon.yaml") is first
    (tmp_path / "pylon.dbc").write_text(dbc.replace('"degC"', '"C"') + "\n", encoding="utf-8")
    second = catalog.load_file(Kind.CAN_PROFILE, tmp_path / "pylon.yaml")
    assert second.sha256 != first.sha256
