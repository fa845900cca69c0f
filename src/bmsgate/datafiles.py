"""Reading the YAML data files that drive bmsgate (configs, protocol definitions, register maps, profiles).

One place for the things every loader must get right: YAML is parsed with a ``yaml.SafeLoader`` subclass
only (no tags that construct objects, so a data file can never run code) that also refuses what would
silently lose data or exhaust the machine later: a key written twice in one mapping, nesting deeper than
:data:`MAX_DEPTH` and aliases that expand to more than :data:`MAX_NODES` nodes (a "billion laughs" file is
small as a graph but every consumer walks it as a tree). Validation errors are turned into one readable
location (``batteries[0].transport.address``) and reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bmsgate.errors import BmsgateError

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
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

#: Deepest nesting of mappings and lists accepted (aliases included); real files use fewer than ten.
MAX_DEPTH: Final = 64
#: Most nodes a document may have with every alias expanded; the largest built-in file has a few thousand.
MAX_NODES: Final = 100_000

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


class _LimitExceeded(yaml.MarkedYAMLError):
    """A document that is valid YAML but breaks one of this loader's rules."""


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` with a nesting bound and a duplicate-key check while composing."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # Checked before descending: PyYAML composes recursively, so a deep file would otherwise end
        # in a RecursionError thousands of frames down.
        if self._depth >= MAX_DEPTH and not self.check_event(yaml.AliasEvent, yaml.ScalarEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise _LimitExceeded(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node: MappingNode = super().compose_mapping_node(anchor)
        first_marks: dict[Any, yaml.Mark] = {}
        for key_node, _value in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            # Compare constructed keys, as the dict will: `1` and `0x1` are the same key.
            key = self.construct_object(key_node)
            try:
                first = first_marks.setdefault(key, key_node.start_mark)
            except TypeError:  # unhashable; the constructor reports it
                continue
            if first is not key_node.start_mark:
                raise _LimitExceeded(
                    problem=f"duplicate key {key_node.value!r} (first at line {first.line + 1}, again at line "
                    f"{key_node.start_mark.line + 1})",
                    problem_mark=key_node.start_mark,
                )
        return node


def _check_expansion(root: Node) -> None:
    """Refuse a node graph whose tree (aliases expanded) is too big or too deep.

    Sizes and heights are memoised per node, so the cost follows the file, not its expansion.

    Raises:
        _LimitExceeded: naming the node where the bound is crossed.
    """
    known: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def visit(node: Node, depth: int) -> tuple[int, int]:
        seen = known.get(id(node))
        if seen is None:
            if id(node) in active:
                raise _LimitExceeded(
                    problem="an alias refers to a node that contains it (a recursive structure)",
                    problem_mark=node.start_mark,
                )
            if depth > MAX_DEPTH:
                raise _LimitExceeded(
                    problem=f"nested deeper than {MAX_DEPTH} levels (aliases expanded)", problem_mark=node.start_mark
                )
            children: list[Node] = []
            if isinstance(node, SequenceNode):
                children = list(node.value)
            elif isinstance(node, MappingNode):
                children = [part for pair in node.value for part in pair]
            active.add(id(node))
            size, height = 1, 1
            for child in children:
                child_size, child_height = visit(child, depth + 1)
                size += child_size
                height = max(height, child_height + 1)
                if size > MAX_NODES:
                    raise _LimitExceeded(
                        problem=f"aliases expand this to more than {MAX_NODES} nodes", problem_mark=node.start_mark
                    )
            active.discard(id(node))
            seen = known[id(node)] = (size, height)
        if depth + seen[1] - 1 > MAX_DEPTH:
            raise _LimitExceeded(
                problem=f"nested deeper than {MAX_DEPTH} levels (aliases expanded)", problem_mark=node.start_mark
            )
        return seen

    visit(root, 1)


def _load(text: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_text(path: str | Path, *, error: ErrorFactory) -> str:
    """The file's text, or `error("cannot read the file: ...")` raised."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"not a UTF-8 text file (byte {exc.start} is {exc.object[exc.start]:#04x})") from None


def parse_yaml(text: str, *, error: ErrorFactory) -> Any:
    """Parse YAML safely; a syntax error is raised as `error("line L, column C: invalid YAML: ...")`.

    So are a duplicate key (naming both lines), nesting deeper than :data:`MAX_DEPTH` and aliases that
    expand beyond :data:`MAX_NODES` nodes.
    """
    try:
        return _load(text)
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
