"""Built-in protocol definitions (package data) and user-supplied definition files."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from bmsgate.errors import DefinitionError
from bmsgate.protocols.codec import CompiledProtocol, compile_definition
from bmsgate.protocols.definition import definition_from_text, load_definition

__all__ = ["builtin_names", "builtin_protocols", "get_protocol", "load_protocol_file", "resolve_protocol"]

_DEFS_DIR = ("data", "protocols")


@functools.cache
def builtin_names() -> tuple[str, ...]:
    """Names of the shipped definitions, sorted."""
    return tuple(
        sorted(
            entry.name.removesuffix(".yaml")
            for entry in resources.files("bmsgate").joinpath(*_DEFS_DIR).iterdir()
            if entry.name.endswith(".yaml")
        )
    )


@functools.cache
def get_protocol(name: str) -> CompiledProtocol:
    """A built-in protocol, compiled once.

    Raises:
        DefinitionError: no built-in protocol has that name.
    """
    if name not in builtin_names():
        raise DefinitionError(
            f"no built-in protocol {name!r}; available: {', '.join(builtin_names())}",
            source="protocol",
        )
    resource = resources.files("bmsgate").joinpath(*_DEFS_DIR, f"{name}.yaml")
    definition = definition_from_text(resource.read_text(encoding="utf-8"), source=f"<built-in {name}.yaml>")
    return compile_definition(definition)


def builtin_protocols() -> list[CompiledProtocol]:
    """Every built-in protocol, compiled."""
    return [get_protocol(name) for name in builtin_names()]


def load_protocol_file(path: str | Path) -> CompiledProtocol:
    """Load and compile a user definition file (pure data: it can never execute code)."""
    return compile_definition(load_definition(path))


def resolve_protocol(name_or_path: str) -> CompiledProtocol:
    """A built-in name (``jbd``) or a path to a ``.yaml`` definition file."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        return load_protocol_file(name_or_path)
    return get_protocol(name_or_path)
