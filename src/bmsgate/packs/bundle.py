"""The pack file: a named, versioned bundle of data files, built from a directory and checked as a gateway will.

A pack's source is a directory in the catalog's layout plus a manifest::

    pack.yaml          name, version, description, hardware (fnmatch patterns of the board models it fits)
    protocols/*.yaml   protocol definitions
    modbus/*.yaml      register maps
    can/*.yaml, *.dbc  CAN profiles and the DBC files they name

``bmsgate pack build DIR`` (:func:`build_pack`) loads and compiles every item exactly as a gateway does (the same
:class:`~bmsgate.catalog.Catalog` code, on a copy written the way a gateway installs it), reports every problem at
once, and writes one file: canonical JSON (sorted keys, no whitespace) holding the manifest, each item's
identity (kind, name, version, sha256 of its canonical IR) and the files' text. The same input always gives
the same bytes, so the pack's sha256 names it in TUF metadata and in a gateway's state.

What the engine needs is computed, never declared: ``requires.constructs`` is the union of the protocol
definitions' constructs and ``requires.engine`` the builder's engine level, so a gateway decides "can I run
this" from the manifest before it writes anything (:mod:`bmsgate.packs.compatibility`).

A pack is data. Reading one (:func:`read_pack`) is bounded (size, file count, path shapes: one folder level,
known folders and extensions, no ``..``; every item with its file), and nothing in it is ever executed or
imported; installing (:func:`install_packs`) writes plain files into a fresh directory, which the gateway
then loads again and whose identities must equal the manifest's (:func:`validate_installed`).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bmsgate.canonical import canonical_bytes
from bmsgate.catalog import Catalog, Kind
from bmsgate.datafiles import parse_yaml
from bmsgate.errors import BmsgateError, DefinitionError
from bmsgate.fleet.updates import FailureReason
from bmsgate.packs.errors import PackError
from bmsgate.protocols.constructs import ENGINE_VERSION

__all__ = [
    "MANIFEST_FILE",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_PACK_BYTES",
    "Pack",
    "PackItem",
    "PackManifest",
    "PackRequirements",
    "build_pack",
    "install_packs",
    "pack_file_name",
    "pack_sha256",
    "read_pack",
    "validate_installed",
]

MANIFEST_FILE: Final = "pack.yaml"
FORMAT: Final = 1
MAX_PACK_BYTES: Final = 8 * 1024 * 1024
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_FILES: Final = 256
_FOLDERS: Final[Mapping[str, tuple[str, ...]]] = {
    "protocols": (".yaml",),
    "modbus": (".yaml",),
    "can": (".yaml", ".dbc"),
}
_KIND_OF_FOLDER: Final[Mapping[str, Kind]] = {
    "protocols": Kind.PROTOCOL,
    "modbus": Kind.REGISTER_MAP,
    "can": Kind.CAN_PROFILE,
}
_FILE_PATH: Final = re.compile(r"^(protocols|modbus|can)/[a-z0-9][a-z0-9_.-]{0,95}\.(yaml|dbc)$")
"""One folder level, lower-case names: safe on every file system, never ``..`` or absolute."""

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_PackName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
_Version = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")]
_Pattern = Annotated[str, Field(min_length=1, max_length=128)]
_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _ManifestSource(BaseModel):
    """``pack.yaml`` as written by a pack's author."""

    model_config = _STRICT

    name: _PackName
    version: _Version
    description: Annotated[str, Field(max_length=1024)] = ""
    hardware: Annotated[tuple[_Pattern, ...], Field(min_length=1, max_length=32)] = ("*",)
    """Board models this pack fits (shell patterns, case-insensitive, against the gateway's hardware model)."""


class PackRequirements(BaseModel):
    """What a gateway's engine must offer (computed at build)."""

    model_config = _STRICT

    engine: Annotated[int, Field(ge=1, le=1_000_000)]
    constructs: Annotated[tuple[Annotated[str, Field(max_length=64)], ...], Field(max_length=256)] = ()


class PackItem(BaseModel):
    """One data file of a pack and its identity."""

    model_config = _STRICT

    kind: Literal["protocol", "register-map", "can-profile"]
    name: Annotated[str, Field(min_length=1, max_length=128)]
    version: Annotated[str, Field(max_length=64)] | None = None
    sha256: _Sha256
    file: Annotated[str, Field(pattern=_FILE_PATH.pattern)]


class PackManifest(BaseModel):
    """Everything of a pack but the files' text: what a gateway checks before it installs anything."""

    model_config = _STRICT

    format: Literal[1]
    name: _PackName
    version: _Version
    description: Annotated[str, Field(max_length=1024)] = ""
    hardware: Annotated[tuple[_Pattern, ...], Field(min_length=1, max_length=32)]
    requires: PackRequirements
    items: Annotated[tuple[PackItem, ...], Field(min_length=1, max_length=MAX_FILES)]

    @property
    def label(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


class Pack(BaseModel):
    """A whole pack as read from its file."""

    model_config = _STRICT

    manifest: PackManifest
    files: Mapping[Annotated[str, Field(pattern=_FILE_PATH.pattern)], Annotated[str, Field(max_length=MAX_FILE_BYTES)]]


def pack_file_name(manifest: PackManifest) -> str:
    """The file name a built pack gets (and its TUF target name): ``<name>-<version>.pack.json``."""
    return f"{manifest.name}-{manifest.version}.pack.json"


# -- build ---------------------------------------------------------------------------------------------------


def _source_files(directory: Path, problems: list[str]) -> dict[str, str]:
    """The data files below `directory` (relative path -> text); what does not belong is a problem."""
    files: dict[str, str] = {}
    total = 0
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if relative == MANIFEST_FILE or (path.is_dir() and not path.is_symlink() and relative in _FOLDERS):
            continue
        if path.is_symlink():
            problems.append(f"{relative}: a symbolic link (a pack holds plain files only)")
            continue
        if path.is_dir():
            problems.append(f"{relative}: unexpected folder (expected only {', '.join(sorted(_FOLDERS))})")
            continue
        if not _FILE_PATH.match(relative):
            problems.append(
                f"{relative}: not a pack file (expected protocols/*.yaml, modbus/*.yaml, can/*.yaml or can/*.dbc, "
                "lower-case names)"
            )
            continue
        if path.suffix not in _FOLDERS[relative.split("/", 1)[0]]:
            problems.append(f"{relative}: a {path.suffix} file does not belong in this folder")
            continue
        size = path.stat().st_size
        total += size
        if size > MAX_FILE_BYTES:
            problems.append(f"{relative}: {size} bytes, at most {MAX_FILE_BYTES}")
            continue
        try:
            files[relative] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{relative}: cannot read it as UTF-8 text: {exc}")
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files, at most {MAX_FILES}")
    if total > MAX_PACK_BYTES // 2:
        problems.append(f"{total} bytes of files, at most {MAX_PACK_BYTES // 2}")
    return files


def _manifest_source(directory: Path, problems: list[str]) -> _ManifestSource | None:
    path = directory / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{MANIFEST_FILE}: cannot read it: {exc}")
        return None
    try:
        data = parse_yaml(text, error=lambda reason: DefinitionError(reason, source=str(path)))
        return _ManifestSource.model_validate(data)
    except DefinitionError as exc:
        problems.append(f"{MANIFEST_FILE}: {exc}")
    except ValidationError as exc:
        problems.extend(f"{MANIFEST_FILE}: {_where(error)}: {error['msg']}" for error in exc.errors())
    return None


def _where(error: Mapping[str, object]) -> str:
    location = error.get("loc", ())
    return ".".join(str(part) for part in location) if isinstance(location, tuple) and location else "<root>"


def _load_items(files: Mapping[str, str]) -> tuple[list[PackItem], set[str], list[str]]:
    """Write `files` as a gateway installs them and load + compile every item through the catalog."""
    problems: list[str] = []
    items: list[PackItem] = []
    constructs: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="bmsgate-pack-") as scratch:
        root = Path(scratch)
        _write_files(files, root)
        catalog = Catalog(builtin_dir=root / "_none", system_dir=root / "_none", packs_dir=root)
        for relative in sorted(files):
            folder, name = relative.split("/", 1)
            if not name.endswith(".yaml"):
                continue
            kind = _KIND_OF_FOLDER[folder]
            try:
                item = catalog.get(kind, name.removesuffix(".yaml"))
                compiled = item.compiled
            except BmsgateError as exc:
                # The scratch copy's path means nothing to the author: name the file as in the pack.
                problems.append(f"{relative}: {str(exc).replace(str(root / relative) + ': ', '')}")
                continue
            requires = getattr(item.definition, "requires", None)
            if kind is Kind.PROTOCOL and requires:
                constructs.update(requires)
            del compiled
            items.append(
                PackItem(kind=kind.value, name=item.name, version=item.version, sha256=item.sha256, file=relative)
            )
    return items, constructs, problems


def build_pack(directory: str | Path) -> tuple[PackManifest, bytes]:
    """Validate a pack's source directory as a gateway would and return its manifest and file bytes.

    Raises:
        PackError: reason ``definition``; the message lists every problem found (manifest, file names,
            each item's validation), one per line.
    """
    root = Path(directory)
    if not root.is_dir():
        raise PackError(FailureReason.DEFINITION, "not a directory", source=str(root))
    problems: list[str] = []
    source = _manifest_source(root, problems)
    files = _source_files(root, problems)
    items, constructs, item_problems = _load_items(files) if files else ([], set(), [])
    problems += item_problems
    if not files and not problems:
        problems.append("no data files (protocols/, modbus/ or can/)")
    if problems or source is None:
        raise PackError(FailureReason.DEFINITION, "\n  ".join(["the pack is refused:", *problems]), source=str(root))
    manifest = PackManifest(
        format=FORMAT,
        name=source.name,
        version=source.version,
        description=source.description,
        hardware=source.hardware,
        requires=PackRequirements(engine=ENGINE_VERSION, constructs=tuple(sorted(constructs))),
        items=tuple(items),
    )
    data = canonical_bytes({**manifest.model_dump(mode="json"), "files": files})
    if len(data) > MAX_PACK_BYTES:
        raise PackError(
            FailureReason.DEFINITION, f"the pack is {len(data)} bytes, at most {MAX_PACK_BYTES}", source=str(root)
        )
    return manifest, data


# -- read and install ------------------------------------------------------------------------------------------


def read_pack(data: bytes, *, source: str = "") -> Pack:
    """Parse a pack file (bounded; nothing is written or loaded).

    Raises:
        PackError: reason ``definition``: too large, not JSON, not the pack schema, or files and items that
            do not agree (an item whose file is missing, a YAML file no item names).
    """
    if len(data) > MAX_PACK_BYTES:
        raise PackError(FailureReason.DEFINITION, f"{len(data)} bytes, at most {MAX_PACK_BYTES}", source=source)
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PackError(FailureReason.DEFINITION, f"not a pack file (JSON): {exc}", source=source) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("files"), dict):
        raise PackError(FailureReason.DEFINITION, "not a pack file: no 'files' object", source=source)
    files = parsed.pop("files")
    try:
        pack = Pack(manifest=PackManifest.model_validate(parsed), files=files)
    except ValidationError as exc:
        details = "; ".join(f"{_where(error)}: {error['msg']}" for error in exc.errors()[:5])
        raise PackError(FailureReason.DEFINITION, f"not a valid pack: {details}", source=source) from None
    if len(pack.files) > MAX_FILES:
        raise PackError(FailureReason.DEFINITION, f"{len(pack.files)} files, at most {MAX_FILES}", source=source)
    missing = sorted({item.file for item in pack.manifest.items} - set(pack.files))
    if missing:
        raise PackError(FailureReason.DEFINITION, f"items without their file: {', '.join(missing)}", source=source)
    listed = {item.file for item in pack.manifest.items}
    unlisted = sorted(name for name in pack.files if name.endswith(".yaml") and name not in listed)
    if unlisted:
        raise PackError(FailureReason.DEFINITION, f"files no item names: {', '.join(unlisted)}", source=source)
    return pack


def _write_files(files: Mapping[str, str], root: Path) -> None:
    for relative, text in files.items():
        if not _FILE_PATH.match(relative):  # pragma: no cover - Pack and build_pack checked it
            raise PackError(FailureReason.DEFINITION, f"refusing the file name {relative!r}")
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def install_packs(packs: Sequence[Pack], into: str | Path) -> None:
    """Write the packs' files into `into` (a new, empty directory): one catalog layer holding them all.

    Raises:
        PackError: reason ``definition``: two packs ship a file of the same name (neither may shadow the
            other silently), or `into` is not empty.
    """
    root = Path(into)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise PackError(FailureReason.INTERNAL, "the slot directory is not empty", source=str(root))
    owners: dict[str, str] = {}
    for pack in packs:
        for relative in pack.files:
            if relative in owners:
                raise PackError(
                    FailureReason.DEFINITION,
                    f"{relative} is in both {owners[relative]} and {pack.manifest.label}",
                    source=pack.manifest.label,
                )
            owners[relative] = pack.manifest.label
    for pack in packs:
        _write_files(pack.files, root)


def validate_installed(packs: Iterable[Pack], directory: str | Path) -> list[PackItem]:
    """Load and compile every item of the installed `packs` from `directory`, as the gateway will run them.

    Returns the items (each verified against its manifest identity).

    Raises:
        PackError: reason ``definition``: an item fails to load or compile on this gateway, or its identity
            differs from the manifest's (an engine that reads the file differently).
    """
    catalog = Catalog(builtin_dir=Path(directory) / "_none", system_dir=Path(directory) / "_none", packs_dir=directory)
    checked: list[PackItem] = []
    for pack in packs:
        for expected in pack.manifest.items:
            kind = Kind(expected.kind)
            try:
                item = catalog.get(kind, Path(expected.file).stem)
                _ = item.compiled
            except DefinitionError as exc:
                raise PackError(
                    FailureReason.DEFINITION, f"{expected.file}: {exc}", source=pack.manifest.label
                ) from None
            if item.sha256 != expected.sha256 or item.name != expected.name:
                raise PackError(
                    FailureReason.DEFINITION,
                    f"{expected.file}: loads as {item.name} {item.sha256[:12]}, the pack says "
                    f"{expected.name} {expected.sha256[:12]}",
                    source=pack.manifest.label,
                )
            checked.append(expected)
    return checked


def pack_sha256(data: bytes) -> str:
    """The identity of a pack file (its bytes' sha256, as TUF and the gateway's state name it)."""
    return hashlib.sha256(data).hexdigest()
