"""Reading and writing the store's JSON columns fast: the only module that imports msgspec.

The fleet overview reads every gateway's latest snapshots (~1.2 KB of JSON each); at 10,000 gateways the
standard library's decoder is most of that read. msgspec (a Litestar dependency, so present wherever the
fleet server runs) decodes the same JSON about five times faster; without it, the standard library is used.
:func:`dumps` encodes with msgspec too (ingest writes a full snapshot per reading), but msgspec writes NaN
and infinities as ``null``: it is only for values the caller checked (the standard library's strict
encoder stays for everything else, :func:`bmsgate.fleet.server.store.rows.dumps`).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "loads"]

try:
    import msgspec
except ImportError:  # pragma: no cover - the fleet extra installs it
    msgspec = None  # type: ignore[assignment]

_decode = msgspec.json.Decoder().decode if msgspec is not None else json.loads
_encode = msgspec.json.Encoder().encode if msgspec is not None else None


def dumps(value: Any) -> str:
    """Compact JSON text of a value whose numbers the caller checked to be finite.

    Raises:
        ValueError: a NaN or infinity after all (only without msgspec), or a value JSON cannot hold.
    """
    if _encode is not None:
        try:
            return _encode(value).decode()
        except (TypeError, ValueError, UnicodeError):
            pass  # e.g. a lone surrogate in a string: the standard library escapes it
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes) -> Any:
    """Decode a JSON column.

    Raises:
        ValueError: the text is not JSON.
    """
    try:
        return _decode(text)
    except ValueError:
        raise
    except Exception as exc:  # msgspec.DecodeError is a ValueError subclass; anything else is damage too
        raise ValueError(f"damaged JSON column: {exc}") from exc
