"""The one kind of cache the protocol engine keeps: a bounded memo of a pure function.

A compiled protocol is shared by every battery that speaks it, across asyncio tasks and threads, so
any state it carries must be safe to share. A `BoundedMemo` is, by construction:

- the function is pure and its results are immutable, so a hit can never hand out a value another
  caller could change or that belongs to another battery;
- a lookup and an insert are single dict operations (atomic in CPython, with or without the GIL);
  two callers missing at once both compute the same value and one insert wins, which is harmless;
- it is bounded: when full it is emptied (cheaper on the hot path than LRU bookkeeping; the working
  set, such as one device-info frame per battery, refills it at once).

Each use in the engine says why the memo pays for itself.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

__all__ = ["BoundedMemo"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(dict[K, V]):
    """``memo[key]`` is ``function(key)``, computed once per key while it stays among the last `size`.

    A dict subclass so that a hit is a plain C-level lookup (no Python call on the decode hot path);
    `__missing__` computes, bounds and inserts on a miss. Only `memo[key]` is meant to be used.
    """

    __slots__ = ("_function", "_size")

    def __init__(self, function: Callable[[K], V], size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError("a memo needs room for at least one value")
        self._function = function
        self._size = size

    def __missing__(self, key: K) -> V:
        value = self._function(key)
        if len(self) >= self._size:
            self.clear()
        self[key] = value
        return value

    def __repr__(self) -> str:
        name = getattr(self._function, "__qualname__", repr(self._function))
        return f"<BoundedMemo of {name}: {len(self)}/{self._size}>"
