"""Filling a frozen, slotted dataclass without its ``__init__``: one plain store per field.

A frozen dataclass's ``__init__`` parses keywords and routes each field through ``object.__setattr__``;
calling each slot's descriptor is cheaper, but still a call per field. `slot_filler` makes the instance as a
mutable twin of the class (same bases, same slots, so the same memory layout), whose slots take plain
attribute stores (specialised by the interpreter: no call), and then turns it into the class by
``__class__`` assignment, which CPython allows between classes of one layout. The result is an ordinary
instance of the class, frozen like any other.

The fill function is generated once from the dataclass's own field names (identifiers by construction,
checked anyway); each default enters as a bound name, never as source text.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["slot_filler"]


def slot_filler(cls: type, *, name: str, doc: str) -> Callable[[Mapping[str, Any]], Any]:
    """``fill(values)``: a `cls` with every field from `values`, or its default (None for required fields).

    `name` and `doc` become the function's name and docstring (it is the public function itself, so that
    no wrapper's call is paid). Values are not checked: callers pass typed values of field names only.

    Raises:
        TypeError: `cls` is not a slotted dataclass (or a field name is not an identifier).
    """
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: not a slotted dataclass")
    fields = dataclasses.fields(cls)
    if not all(field.name.isidentifier() and not keyword.iskeyword(field.name) for field in fields):
        raise TypeError(f"{cls.__name__}: a field name is not an identifier")
    twin = type(f"_Filling{cls.__name__}", cls.__bases__, {"__slots__": cls.__dict__["__slots__"]})
    namespace: dict[str, Any] = {"__builtins__": {}, "new": object.__new__, "twin": twin, "cls": cls}
    lines = [f"def {name}(values):", "    made = new(twin)", "    get = values.get"]
    for position, field in enumerate(fields):
        # Required fields and factories have no value default: the trusted caller always passes those.
        namespace[f"default{position}"] = None if field.default is dataclasses.MISSING else field.default
        lines.append(f"    made.{field.name} = get({field.name!r}, default{position})")
    lines += ["    made.__class__ = cls", "    return made"]
    exec("\n".join(lines), namespace)  # noqa: S102  # the dataclass's own field names, checked above
    fill: Callable[[Mapping[str, Any]], Any] = namespace[name]
    fill.__doc__ = doc
    fill.__module__ = cls.__module__
    return fill
