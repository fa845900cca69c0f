"""Settings of the HTTP API and dashboard (all optional: the defaults serve a fleet on localhost)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Final

from bmsgate.fleet.server.api.ratelimit import RateLimit

__all__ = ["ApiSettings"]

_TOKEN_LIMIT: Final = RateLimit(per_minute=1200, burst=120)
_ANONYMOUS_LIMIT: Final = RateLimit(per_minute=60, burst=20)


@dataclasses.dataclass(frozen=True, slots=True)
class ApiSettings:
    """How the API and the dashboard behave."""

    token_limit: RateLimit = _TOKEN_LIMIT
    """Per token: the dashboard makes a handful of requests per page and one per chart."""
    anonymous_limit: RateLimit = _ANONYMOUS_LIMIT
    """Per client IP, for requests without a valid token (including wrong tokens: guessing is throttled)."""
    tile_url: str | None = None
    """A map tile server (``https://…/{z}/{x}/{y}.png``); None draws only the offline country outline."""
    tile_attribution: str = ""
    assets_dir: Path | None = None
    """Where the npm packages are (a ``node_modules`` folder); None: ``web/node_modules`` of the repository."""
    command_ttl_s: float = 300.0
    """A command not delivered within this time is rejected by the gateway as expired."""
    live_auth_timeout_s: float = 5.0
    """A websocket must send its token within this time."""
    live_token_check_s: float = 2.0
    """A websocket's token is verified again this often (and before each message): a revoked token's
    socket is closed (4401) within this time."""
    live_queue: int = 1000
    """Live updates buffered per websocket; a client that falls further behind is disconnected."""
    overview_max_age_s: float = 60.0
    """The overview's summaries are read from the store in full at most this often (live updates refresh
    single gateways in between)."""
    map_max_points: int = 1500
    """A map view with at most this many sites shows each as itself; beyond, they are clustered."""
    max_series_points: int = 20_000
    """The most points one series answer holds (``auto`` resolution picks a coarser one to stay below)."""
