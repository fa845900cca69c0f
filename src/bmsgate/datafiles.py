"""Reading the YAML data files that drive bmsgate (configs, protocol definitions, register maps, profiles).

One place for the two things every loader must get right: YAML is parsed with ``yaml.safe_load`` only
(no tags that construct objects, so a data file can never run code), and validation errors are turned
into one readable location (``batteries[0].transport.address``) and reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bmsgate.errors import BmsgateError

__all__ = [
    "ValidationProblem",
    "clean_message",
    "describe_validation_error",
    "describe_validation_errors",
    "parse_yaml",
    "read_text",
]

ErrorFactory = Callable[[str], BmsgateError]

# Pieces pydantic adds to locations that the user never wrote.
_INTERNAL_PARTS = frozenset({"int", "str", "float", "bool"})
# What pydantic writes before the message a validator raised; it tells the user nothing.
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def read_text(path: str | Path, *, error: ErrorFactory) -> str:
    """The file's text, or `error("cannot read the file: ...")` raised."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"not a UTF-8 text file (byte {exc.start} is {exc.object[exc.start]:#04x})") from None


def parse_yaml(text: str, *, error: ErrorFactory) -> Any:
    """Parse YAML safely; a syntax error is raised as `error("line L, column C: invalid YAML: ...")`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{where}invalid YAML: {problem}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class ValidationProblem:
    """One problem of a pydantic validation error, as people read it."""

    location: str
    """``batteries[0].transport.address``; ``(top level)`` when the document itself is wrong."""
    reason: str
    kind: str
    """pydantic's error type (``missing``, ``extra_forbidden``, ...)."""
    value: Any
    """The offending input."""
    more: int
    """How many further problems follow this one."""

    @property
    def more_text(self) -> str:
        """`` (and N more problems)`` or nothing."""
        if not self.more:
            return ""
        return f" (and {self.more} more problem{'s' if self.more > 1 else ''})"


def describe_validation_errors(exc: ValidationError, *, skip: Iterable[str] = ()) -> list[ValidationProblem]:
    """Every problem of `exc`, in pydantic's order; `skip` names location parts to leave out (e.g. union tags)."""
    errors = exc.errors()
    skipped = set(skip)
    problems = []
    for index, error in enumerate(errors):
        location = ""
        for part in error["loc"]:
            if isinstance(part, int):
                location += f"[{part}]"
            elif part in skipped or part in _INTERNAL_PARTS or part.startswith(("function-", "constrained-")):
                continue
            else:
                location += f".{part}" if location else str(part)
        problems.append(
            ValidationProblem(
                location=location or "(top level)",
                reason=clean_message(str(error["msg"])),
                kind=str(error["type"]),
                value=error.get("input"),
                more=len(errors) - 1 - index,
            )
        )
    return problems


def describe_validation_error(exc: ValidationError, *, skip: Iterable[str] = ()) -> ValidationProblem:
    """The first problem of `exc` (`more` counts the rest); see `describe_validation_errors`."""
    first = describe_validation_errors(exc, skip=skip)[0]
    return dataclasses.replace(first, more=len(exc.errors()) - 1)


def clean_message(message: str) -> str:
    """A pydantic message without the prefix pydantic puts before a validator's own text."""
    for prefix in _PYDANTIC_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
