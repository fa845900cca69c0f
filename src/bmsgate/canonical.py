"""The canonical JSON form of a data file and its identity (sha256 of those bytes).

Every data file bmsgate runs (protocol definition, register map, CAN profile) is validated into a model and
serialised to exactly one byte string: keys sorted, no whitespace, UTF-8, values as the model's JSON mode
gives them (bytes as hex, integral numbers without a fraction, defaults left out). Two files that mean the
same thing therefore have the same identity, whatever their YAML spelling, comments or key order; the fleet,
packs, logs and the catalog all name an item by that sha256.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any

from pydantic import BaseModel, PlainSerializer

__all__ = ["CanonicalModel", "Real", "canonical_bytes", "compact_number", "identity", "parse_canonical"]


def compact_number(value: float) -> float | int:
    """An integral float as an int, so a file's ``scale: 1`` is written ``1`` and never ``1.0``."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


Real = Annotated[float, PlainSerializer(compact_number, return_type=float | int, when_used="json")]
"""A float field whose canonical form drops a zero fraction (``1.0`` and ``1`` are one identity).

The model keeps a float in memory, so the engines' arithmetic does not depend on how the file spelled it.
"""


def canonical_bytes(data: Any) -> bytes:
    """The one byte string for JSON-compatible `data` (sorted keys, compact separators, UTF-8).

    Raises:
        ValueError: `data` holds NaN or infinity, which JSON cannot carry.
    """
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def identity(canonical: bytes) -> str:
    """The item's identity: lowercase hex sha256 of its canonical bytes."""
    return hashlib.sha256(canonical).hexdigest()


def parse_canonical(data: bytes | str) -> Any:
    """JSON text back into plain data (the inverse of :func:`canonical_bytes`)."""
    return json.loads(data)


class CanonicalModel:
    """Mixin for a validated data-file model (a pydantic model) with one canonical JSON form, its IR.

    Defaults are left out of the IR, so an engine that adds an optional key with a default does not change
    the identity of files written before it; ``format`` (and whatever :meth:`_ir_always` adds) is always
    written, because a reader needs it before anything else.
    """

    __slots__ = ()

    def _ir_always(self) -> dict[str, Any]:
        return {}

    def ir(self) -> dict[str, Any]:
        """The canonical IR as plain JSON-compatible data."""
        if not isinstance(self, BaseModel):  # pragma: no cover - only pydantic models mix this in
            raise TypeError(f"{type(self).__name__} is not a pydantic model")
        data = self.model_dump(mode="json", exclude_defaults=True)
        data.update(self._ir_always())
        return data

    def canonical_json(self) -> bytes:
        """The canonical bytes of the IR."""
        return canonical_bytes(self.ir())

    @property
    def sha256(self) -> str:
        """The identity: sha256 of :meth:`canonical_json`."""
        return identity(self.canonical_json())
