"""The pack file: built as a gateway loads it, read within bounds, installed into one catalog layer."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.catalog import BUILTIN_DIR, Catalog, Kind
from bmsgate.fleet.updates import FailureReason
from bmsgate.packs.bundle import (
    MAX_PACK_BYTES,
    build_pack,
    install_packs,
    pack_file_name,
    pack_sha256,
    read_pack,
    validate_installed,
)
from bmsgate.packs.compatibility import check_compatible, fits_hardware
from bmsgate.packs.errors import PackError

_PACK_KEYS = (
    "format",
    "name",
    "version",
    "hardware",
    "requires",
    "items",
    "files",
    "description",
    "extra",
    "items.kind",
    "items.name",
    "items.sha256",
    "items.file",
    "files.can/pylon.yaml",
    "files.../x.yaml",
)


def _source(directory: Path, *, name: str = "za-maps", version: str = "3", hardware: str = '["Raspberry Pi*"]') -> Path:
    (directory / "modbus").mkdir(parents=True)
    (directory / "can").mkdir()
    (directory / "protocols").mkdir()
    shutil.copy(BUILTIN_DIR / "modbus" / "generic.yaml", directory / "modbus" / "site-map.yaml")
    text = (directory / "modbus" / "site-map.yaml").read_text(encoding="utf-8")
    (directory / "modbus" / "site-map.yaml").write_text(
        text.replace("name: generic", "name: site-map", 1), encoding="utf-8"
    )
    shutil.copy(BUILTIN_DIR / "can" / "pylon.yaml", directory / "can")
    shutil.copy(BUILTIN_DIR / "can" / "pylon.dbc", directory / "can")
    shutil.copy(BUILTIN_DIR / "protocols" / "tdt.yaml", directory / "protocols")
    (directory / "pack.yaml").write_text(
        f'name: {name}\nversion: "{version}"\ndescription: test pack\nhardware: {hardware}\n', encoding="utf-8"
    )
    return directory


def test_a_pack_names_every_item_by_its_canonical_identity(tmp_path: Path) -> None:
    manifest, data = build_pack(_source(tmp_path / "src"))
    builtin = Catalog(system_dir=tmp_path / "none")
    by_name = {(item.kind, item.name): item for item in manifest.items}
    assert by_name[("can-profile", "pylon")].sha256 == builtin.get(Kind.CAN_PROFILE, "pylon").sha256
    assert by_name[("protocol", "tdt")].sha256 == builtin.get(Kind.PROTOCOL, "tdt").sha256
    assert ("register-map", "site-map") in by_name
    # What the engine must offer is computed from the files (TDT's currents need sign_magnitude).
    assert "sign_magnitude" in manifest.requires.constructs
    assert pack_file_name(manifest) == "za-maps-3.pack.json"
    # Deterministic: the same source gives the same bytes, hence the same identity in TUF metadata.
    assert build_pack(tmp_path / "src")[1] == data
    assert read_pack(data).manifest == manifest
    assert len(pack_sha256(data)) == 64


def test_build_reports_every_problem_at_once(tmp_path: Path) -> None:
    source = _source(tmp_path / "src", version="not a version!")
    (source / "modbus" / "broken.yaml").write_text("name: broken\nregisters: 12\n", encoding="utf-8")
    (source / "README.md").write_text("notes", encoding="utf-8")
    (source / "scripts").mkdir()
    with pytest.raises(PackError) as caught:
        build_pack(source)
    message = str(caught.value)
    assert caught.value.reason is FailureReason.DEFINITION
    assert "pack.yaml: version" in message
    assert "README.md: not a pack file" in message
    assert "scripts: unexpected folder" in message
    assert "modbus/broken.yaml:" in message
    assert "bmsgate-pack-" not in message, "the scratch directory is not the author's concern"


def test_build_refuses_a_definition_the_engine_would_refuse(tmp_path: Path) -> None:
    source = _source(tmp_path / "src")
    text = (source / "protocols" / "tdt.yaml").read_text(encoding="utf-8")
    (source / "protocols" / "tdt.yaml").write_text(text + "\nmystery_construct: 1\n", encoding="utf-8")
    with pytest.raises(PackError, match=r"protocols/tdt\.yaml: .*mystery_construct"):
        build_pack(source)


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    source = _source(tmp_path / "src")
    (source / "modbus" / "link.yaml").symlink_to(source / "modbus" / "site-map.yaml")
    with pytest.raises(PackError, match=r"modbus/link\.yaml: a symbolic link"):
        build_pack(source)


def test_installed_packs_are_one_catalog_layer_over_the_builtins(tmp_path: Path) -> None:
    _manifest, data = build_pack(_source(tmp_path / "src"))
    pack = read_pack(data)
    slot = tmp_path / "slot"
    install_packs([pack], slot)
    assert len(validate_installed([pack], slot)) == 3  # the DBC is part of its profile, not an item
    catalog = Catalog(system_dir=tmp_path / "none", packs_dir=slot)
    assert catalog.get(Kind.REGISTER_MAP, "site-map").source.layer.value == "pack"
    assert catalog.get(Kind.REGISTER_MAP, "generic").source.layer.value == "builtin"


def test_two_packs_shipping_the_same_file_are_refused(tmp_path: Path) -> None:
    first = read_pack(build_pack(_source(tmp_path / "a"))[1])
    second = read_pack(build_pack(_source(tmp_path / "b", name="other"))[1])
    with pytest.raises(PackError, match=r"in both za-maps@3 and other@3"):
        install_packs([first, second], tmp_path / "slot")


def test_an_item_that_loads_differently_is_refused(tmp_path: Path) -> None:
    _manifest, data = build_pack(_source(tmp_path / "src"))
    document = json.loads(data)
    # Same schema, different meaning: the manifest's identity no longer matches what the gateway loads.
    text = document["files"]["modbus/site-map.yaml"]
    document["files"]["modbus/site-map.yaml"] = text.replace("name: site-map", "name: site-map\nversion: tampered", 1)
    pack = read_pack(json.dumps(document).encode())
    install_packs([pack], tmp_path / "slot")
    with pytest.raises(PackError, match=r"modbus/site-map\.yaml: loads as site-map") as caught:
        validate_installed([pack], tmp_path / "slot")
    assert caught.value.reason is FailureReason.DEFINITION


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["files"].update({"../../etc/passwd.yaml": "x"}), "not a valid pack"),
        (lambda d: d["files"].update({"/abs/x.yaml": "x"}), "not a valid pack"),
        (lambda d: d["files"].update({"protocols/x.py": "import os"}), "not a valid pack"),
        (lambda d: d["files"].update({"protocols/extra.yaml": "name: extra"}), "files no item names"),
        (lambda d: d["files"].pop("can/pylon.yaml"), "items without their file"),
        (lambda d: d.update({"format": 2}), "not a valid pack"),
        (lambda d: d.update({"items": []}), "not a valid pack"),
        (lambda d: d.pop("files"), "no 'files' object"),
    ],
)
def test_a_hostile_pack_file_is_refused(tmp_path: Path, change: object, expected: str) -> None:
    document = json.loads(build_pack(_source(tmp_path / "src"))[1])
    assert callable(change)
    change(document)
    with pytest.raises(PackError, match=expected):
        read_pack(json.dumps(document).encode())


def test_sizes_are_checked_before_parsing() -> None:
    with pytest.raises(PackError, match="at most"):
        read_pack(b" " * (MAX_PACK_BYTES + 1))
    with pytest.raises(PackError, match="JSON"):
        read_pack(b"[" * 100_000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
def test_reading_anything_raises_only_pack_errors(data: bytes) -> None:
    try:
        read_pack(data)
    except PackError:
        pass


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@functools.cache
def _valid_document() -> str:
    with tempfile.TemporaryDirectory() as scratch:
        return build_pack(_source(Path(scratch) / "src"))[1].decode()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_PACK_KEYS), _JSON, min_size=1, max_size=4))
def test_a_valid_pack_with_any_key_replaced_raises_only_pack_errors(changes: dict[str, object]) -> None:
    document = json.loads(_valid_document())
    # Nested keys first, so that replacing their container afterwards is a change of its own.
    for key, value in sorted(changes.items(), key=lambda change: "." not in change[0]):
        if key.startswith("items."):
            document["items"][0][key.removeprefix("items.")] = value
        elif key.startswith("files."):
            document["files"][key.removeprefix("files.")] = value
        else:
            document[key] = value
    try:
        read_pack(json.dumps(document).encode())
    except PackError:
        pass


def test_compatibility_names_what_does_not_fit(tmp_path: Path) -> None:
    manifest = read_pack(build_pack(_source(tmp_path / "src"))[1]).manifest
    assert fits_hardware(manifest, "Raspberry Pi 4 Model B Rev 1.4")
    assert fits_hardware(manifest, "raspberry pi zero 2 w")
    check_compatible(manifest, hardware="Raspberry Pi 5 Model B Rev 1.0")
    with pytest.raises(PackError) as caught:
        check_compatible(manifest, hardware="ESP32-C3")
    assert caught.value.reason is FailureReason.HARDWARE
    assert "ESP32-C3" in str(caught.value)
    requires = manifest.requires.model_copy(update={"engine": 9, "constructs": ("sign_magnitude", "zigzag")})
    newer = manifest.model_copy(update={"requires": requires})
    with pytest.raises(PackError, match="lacks: zigzag") as caught:
        check_compatible(newer, hardware="Raspberry Pi 4")
    assert caught.value.reason is FailureReason.ENGINE
