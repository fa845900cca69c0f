"""One catalog for every kind of data file: protocol definitions, Modbus register maps, CAN profiles.

Search path, earliest first (a later layer shadows an earlier one's item of the same kind and name)::

    builtin   package data: bmsgate/data/{protocols,modbus,can}/NAME.yaml
    system    SYSTEM_DIR/{protocols,modbus,can}/NAME.yaml   (default /etc/bmsgate, env BMSGATE_SYSTEM_DIR)
    pack      PACKS_DIR/{protocols,modbus,can}/NAME.yaml    (activated pushed packs; may not exist)
    file      an explicit path in the configuration or on the command line

One name-or-path rule for all kinds: a string containing ``/`` or ending in ``.yaml``/``.yml`` is a path,
anything else a name searched along the path. Each item knows its kind, name, version (if the file gives
one), identity (sha256 of its canonical IR, see :mod:`bmsgate.canonical`) and where it came from; the
compiled object is built on first use and kept while the file is unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from bmsgate.datafiles import parse_yaml, read_text
from bmsgate.errors import DefinitionError

if TYPE_CHECKING:
    from typing import TypeAlias

    from bmsgate.inverter.can.definition import CanProfileDefinition
    from bmsgate.inverter.can.profiles import CanProfile
    from bmsgate.inverter.modbus.registermap import RegisterMap, RegisterMapDefinition
    from bmsgate.protocols.compiled import CompiledProtocol
    from bmsgate.protocols.definition import ProtocolDefinition

    Definition: TypeAlias = ProtocolDefinition | RegisterMapDefinition | CanProfileDefinition

__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_SYSTEM_DIR",
    "SYSTEM_DIR_ENV",
    "Catalog",
    "CatalogItem",
    "ItemSource",
    "Kind",
    "Layer",
    "default_catalog",
    "is_path",
    "set_default_catalog",
]

BUILTIN_DIR: Final = Path(__file__).parent / "data"
DEFAULT_SYSTEM_DIR: Final = Path("/etc/bmsgate")
SYSTEM_DIR_ENV: Final = "BMSGATE_SYSTEM_DIR"


class Kind(enum.StrEnum):
    """The kinds of data file."""

    PROTOCOL = "protocol"
    REGISTER_MAP = "register-map"
    CAN_PROFILE = "can-profile"


class Layer(enum.StrEnum):
    """Where an item came from, in search order (later shadows earlier)."""

    BUILTIN = "builtin"
    SYSTEM = "system"
    PACK = "pack"
    FILE = "file"


@dataclasses.dataclass(frozen=True, slots=True)
class ItemSource:
    """The layer and the file an item was read from."""

    layer: Layer
    path: str

    def __str__(self) -> str:
        return f"{self.layer.value}:{self.path}"


_Reader = Callable[[str], str]
"""Reads a file named relative to the item's file (a CAN profile's DBC)."""


def _load_protocol(data: Any, source: str, _read: _Reader) -> Definition:
    from bmsgate.protocols.definition import definition_from_mapping  # noqa: PLC0415 - import on first use

    return definition_from_mapping(data, source=source)


def _compile_protocol(definition: Any, _source: str) -> object:
    from bmsgate.protocols.compiled import compile_definition  # noqa: PLC0415

    return compile_definition(definition)


def _load_register_map(data: Any, source: str, _read: _Reader) -> Definition:
    from bmsgate.inverter.modbus.registermap import register_map_definition  # noqa: PLC0415

    return register_map_definition(data, source=source)


def _compile_register_map(definition: Any, source: str) -> object:
    from bmsgate.inverter.modbus.registermap import RegisterMap  # noqa: PLC0415

    return RegisterMap.compile(definition, source=source)


def _load_can_profile(data: Any, source: str, read: _Reader) -> Definition:
    from bmsgate.inverter.can.definition import profile_definition  # noqa: PLC0415

    return profile_definition(data, source=source, read_dbc=read)


def _compile_can_profile(definition: Any, source: str) -> object:
    # The profile compiler (and its DBC reader) loads only here, not for listing or showing a profile.
    from bmsgate.inverter.can.profiles import compile_profile  # noqa: PLC0415

    return compile_profile(definition, source=source)


@dataclasses.dataclass(frozen=True, slots=True)
class _KindSpec:
    folder: str
    title: str
    load: Callable[[Any, str, _Reader], Definition]
    compile: Callable[[Any, str], object]


_KINDS: Final[dict[Kind, _KindSpec]] = {
    Kind.PROTOCOL: _KindSpec("protocols", "protocol", _load_protocol, _compile_protocol),
    Kind.REGISTER_MAP: _KindSpec("modbus", "register map", _load_register_map, _compile_register_map),
    Kind.CAN_PROFILE: _KindSpec("can", "CAN profile", _load_can_profile, _compile_can_profile),
}


def is_path(name_or_path: str | os.PathLike[str]) -> bool:
    """The one rule: a path contains ``/`` or ends in ``.yaml``/``.yml``; anything else is a name."""
    if isinstance(name_or_path, os.PathLike):
        return True
    return "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))


class CatalogItem:
    """One data file: its identity, origin, validated definition and (lazily) compiled object."""

    __slots__ = ("_compiled", "definition", "kind", "name", "sha256", "source", "version")

    def __init__(self, kind: Kind, definition: Definition, source: ItemSource) -> None:
        self.kind = kind
        self.definition = definition
        self.source = source
        self.name = definition.name
        self.version = definition.version
        self.sha256 = definition.sha256
        self._compiled: object | None = None

    def canonical_json(self) -> bytes:
        """The item's canonical IR (its sha256 is :attr:`sha256`)."""
        return self.definition.canonical_json()

    @property
    def compiled(self) -> object:
        """The engine object (CompiledProtocol, RegisterMap or CanProfile), built once.

        Raises:
            DefinitionError: the definition passes the schema but cannot be compiled (e.g. a CAN profile
                naming a frame its DBC lacks).
        """
        if self._compiled is None:
            self._compiled = _KINDS[self.kind].compile(self.definition, self.source.path)
        return self._compiled

    def summary(self) -> dict[str, str | None]:
        """The fields ``bmsgate catalog list`` shows."""
        return {
            "kind": self.kind.value,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "layer": self.source.layer.value,
            "path": self.source.path,
        }

    def __repr__(self) -> str:
        return f"CatalogItem({self.kind.value} {self.name!r}, {self.sha256[:12]}, from {self.source})"


class Catalog:
    """Finds, loads, identifies and caches data files along the search path (see the module docstring).

    Args:
        system_dir: the system layer (default: env ``BMSGATE_SYSTEM_DIR``, else ``/etc/bmsgate``).
        packs_dir: the activated packs' directory, if any (it may not exist yet).
        builtin_dir: the package data (tests may point elsewhere).
    """

    def __init__(
        self,
        *,
        system_dir: str | Path | None = None,
        packs_dir: str | Path | None = None,
        builtin_dir: str | Path = BUILTIN_DIR,
    ) -> None:
        if system_dir is None:
            system_dir = os.environ.get(SYSTEM_DIR_ENV) or DEFAULT_SYSTEM_DIR
        self.layers: tuple[tuple[Layer, Path], ...] = tuple(
            (layer, Path(directory))
            for layer, directory in (
                (Layer.BUILTIN, builtin_dir),
                (Layer.SYSTEM, system_dir),
                (Layer.PACK, packs_dir),
            )
            if directory is not None
        )
        self._cache: dict[
            tuple[Kind, Path], tuple[tuple[int, int], CatalogItem, tuple[tuple[Path, tuple[int, int] | None], ...]]
        ] = {}

    # -- lookup ----------------------------------------------------------------------------------------

    def get(self, kind: Kind, name_or_path: str | os.PathLike[str]) -> CatalogItem:
        """An item by name (along the search path; the latest layer wins) or by file path.

        Raises:
            DefinitionError: no such name (the message lists the available ones), or the file is invalid.
        """
        if is_path(name_or_path):
            return self.load_file(kind, name_or_path)
        name = str(name_or_path)
        for layer, directory in reversed(self.layers):
            path = directory / _KINDS[kind].folder / f"{name}.yaml"
            if path.is_file():
                return self._load(kind, layer, path)
        if kind is Kind.PROTOCOL:
            aliased = self.protocol_aliases().get(name)
            if aliased is not None:
                return aliased
        spec = _KINDS[kind]
        searched = ", ".join(str(directory / spec.folder) for _layer, directory in self.layers)
        aliases = self.protocol_aliases() if kind is Kind.PROTOCOL else {}
        also = f"; aliases: {', '.join(f'{alias} ({item.name})' for alias, item in sorted(aliases.items()))}"
        raise DefinitionError(
            f"no {spec.title} named {name!r}; available: {', '.join(self.names(kind)) or 'none'}"
            f"{also if aliases else ''} (searched {searched})",
            source=f"{kind.value} catalog",
        )

    def protocol_aliases(self) -> dict[str, CatalogItem]:
        """Alias id → the protocol that declares it (``aliases:`` in a definition), along the search path.

        A file named like an alias wins over the alias (see :meth:`get`); of two definitions declaring one
        alias, the one whose name sorts last wins.

        Raises:
            DefinitionError: a protocol file on the search path is invalid.
        """
        found: dict[str, CatalogItem] = {}
        for item in self.items(Kind.PROTOCOL):
            for alias in getattr(item.definition, "aliases", ()):
                found[alias.id] = item
        return found

    def load_file(self, kind: Kind, path: str | os.PathLike[str]) -> CatalogItem:
        """An explicit file (the ``file`` layer; its name is the one inside the file).

        Raises:
            DefinitionError: unreadable, not YAML, or invalid.
        """
        return self._load(kind, Layer.FILE, Path(path))

    def protocol(self, name_or_path: str | os.PathLike[str]) -> CompiledProtocol:
        """A compiled protocol definition (see :meth:`get`)."""
        from bmsgate.protocols.compiled import CompiledProtocol  # noqa: PLC0415

        return _typed(self.get(Kind.PROTOCOL, name_or_path).compiled, CompiledProtocol)

    def register_map(self, name_or_path: str | os.PathLike[str]) -> RegisterMap:
        """A compiled register map (see :meth:`get`)."""
        from bmsgate.inverter.modbus.registermap import RegisterMap  # noqa: PLC0415

        return _typed(self.get(Kind.REGISTER_MAP, name_or_path).compiled, RegisterMap)

    def can_profile(self, name_or_path: str | os.PathLike[str]) -> CanProfile:
        """A compiled CAN profile (see :meth:`get`; needs the ``[can]`` extra)."""
        from bmsgate.inverter.can.profiles import CanProfile  # noqa: PLC0415

        return _typed(self.get(Kind.CAN_PROFILE, name_or_path).compiled, CanProfile)

    def protocols(self) -> list[CompiledProtocol]:
        """Every protocol along the search path, compiled (what discovery and capture analysis try)."""
        return [self.protocol(item.source.path) for item in self.items(Kind.PROTOCOL)]

    # -- listing ---------------------------------------------------------------------------------------

    def names(self, kind: Kind) -> list[str]:
        """Every name of `kind` along the search path, sorted (without loading the files)."""
        return sorted({path.stem for _layer, path in self._files(kind)})

    def items(self, kind: Kind | None = None, *, shadowed: bool = False) -> list[CatalogItem]:
        """Every item along the search path, by kind and name.

        Args:
            kind: only this kind.
            shadowed: also the items a later layer hides (listed before the one that wins).

        Raises:
            DefinitionError: a file on the search path is invalid.
        """
        found: list[CatalogItem] = []
        for each in Kind if kind is None else (kind,):
            by_name: dict[str, list[CatalogItem]] = {}
            for layer, path in self._files(each):
                by_name.setdefault(path.stem, []).append(self._load(each, layer, path))
            for name in sorted(by_name):
                found += by_name[name] if shadowed else by_name[name][-1:]
        return found

    def _files(self, kind: Kind) -> Iterator[tuple[Layer, Path]]:
        for layer, directory in self.layers:
            folder = directory / _KINDS[kind].folder
            if folder.is_dir():
                for path in sorted(folder.glob("*.yaml")):
                    yield layer, path

    # -- loading ---------------------------------------------------------------------------------------

    def _load(self, kind: Kind, layer: Layer, path: Path) -> CatalogItem:
        source = str(path)
        try:
            stat = path.stat()
        except OSError as exc:
            raise DefinitionError(f"cannot read the file: {exc.strerror or exc}", source=source) from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get((kind, path))
        if (
            cached is not None
            and cached[0] == stamp
            and cached[1].source.layer is layer
            and all(_stamp(beside) == seen for beside, seen in cached[2])
        ):
            return cached[1]
        text = read_text(path, error=lambda reason: DefinitionError(reason, source=source))
        data = parse_yaml(text, error=lambda reason: DefinitionError(reason, source=source))
        # Files read beside this one (a CAN profile's DBC) are part of its identity: an edited DBC must
        # not keep serving the old compiled profile.
        besides: list[tuple[Path, tuple[int, int] | None]] = []

        def read_beside(name: str) -> str:
            target = path.parent / name
            besides.append((target, _stamp(target)))
            return read_text(
                target, error=lambda reason: DefinitionError(f"DBC file {target}: {reason}", source=source, field="dbc")
            )

        definition = _KINDS[kind].load(data, source, read_beside)
        item = CatalogItem(kind, definition, ItemSource(layer, source))
        if layer is not Layer.FILE and item.name != path.stem:
            raise DefinitionError(
                f"the file is named {path.stem!r} but its name is {item.name!r}; they must agree on the search path",
                source=source,
                field="name",
            )
        self._cache[(kind, path)] = (stamp, item, tuple(besides))
        return item


_T = TypeVar("_T")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def _typed(value: object, expected: type[_T]) -> _T:
    if not isinstance(value, expected):  # pragma: no cover - _KINDS pairs each kind with its compiler
        raise TypeError(f"expected {expected.__name__}, got {type(value).__name__}")
    return value


@functools.cache
def _initial_catalog() -> Catalog:
    return Catalog()


_default: Catalog | None = None


def default_catalog() -> Catalog:
    """The process-wide catalog (builtin + system layer; the fleet agent installs one with its packs)."""
    return _default or _initial_catalog()


def set_default_catalog(catalog: Catalog | None) -> None:
    """Install the process-wide catalog (None: back to the builtin + system one)."""
    global _default
    _default = catalog
    _initial_catalog.cache_clear()
