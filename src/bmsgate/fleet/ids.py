"""The gateway id's pattern, on its own so that a gateway's configuration can check ids without the protocol.

:mod:`bmsgate.fleet.protocol` (the contract) re-exports it; the credentials file's model uses it from
here, so ``bmsgate run`` loads the fleet's message models only when the fleet output is configured.
"""

from __future__ import annotations

from typing import Final

__all__ = ["GATEWAY_ID_PATTERN"]

GATEWAY_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Gateway ids: safe as a topic level, a broker user name, a file name and a URL path segment."""
