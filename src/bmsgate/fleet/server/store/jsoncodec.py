"""Reading the store's JSON columns fast: the only module that imports msgspec.

The fleet overview reads every gateway's latest snapshots (~1.2 KB of JSON each); at 10,000 gateways the
standard library's decoder is most of that read. msgspec (a Litestar dependency, so present wherever the
fleet server runs) decodes the same JSON about five times faster; without it, the standard library is used.
Writing stays with the standard library's strict encoder (it refuses NaN and infinities).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]

try:
    import msgspec
except ImportError:  # pragma: no cover - the fleet extra installs it
    msgspec = None  # type: ignore[assignment]

_decode = msgspec.json.Decoder().decode if msgspec is not None else json.loads


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
