"""What the API works with: its collaborators, composed once by whoever starts the server."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Final

from bmsgate.fleet.protocol import CommandMessage
from bmsgate.fleet.server.api.assets import Assets
from bmsgate.fleet.server.api.overview import OverviewCache
from bmsgate.fleet.server.api.ratelimit import RateLimiter
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.stream import LiveStream
from bmsgate.fleet.server.auth import TokenStore
from bmsgate.fleet.server.live import LiveFeed
from bmsgate.fleet.server.rollouts.service import RolloutService
from bmsgate.fleet.server.store.repository import Repository

__all__ = ["TOKEN_STATE", "ApiContext", "CommandSender"]

TOKEN_STATE: Final = "bmsgate.token"  # noqa: S105 - a scope key, not a secret
"""Where the access middleware leaves the request's verified token (a ``TokenInfo`` or None)."""

CommandSender = Callable[[str, CommandMessage], Awaitable[None]]
"""Hands a command for one gateway to the broker (``(gateway_id, command)``); raises a ``BmsgateError``
when it cannot (the API answers 503 then)."""


@dataclasses.dataclass(slots=True)
class ApiContext:
    """The collaborators of one API instance."""

    store: Repository
    tokens: TokenStore
    feed: LiveFeed
    send_command: CommandSender
    settings: ApiSettings
    assets: Assets
    stream: LiveStream
    overview: OverviewCache
    token_limiter: RateLimiter
    anonymous_limiter: RateLimiter
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    alarm_deleted: Callable[[int], None] = lambda _alarm_id: None
    """Told of every alarm closed or deleted through the API, and of the active alarms of a gateway deleted
    through it (the alarm engine forgets them, so a condition that persists opens a new alarm)."""
    rollouts: RolloutService | None = None
    """The rollout service (None: rollouts are off, their routes answer 503)."""

    @classmethod
    def compose(
        cls,
        *,
        store: Repository,
        tokens: TokenStore,
        feed: LiveFeed,
        send_command: CommandSender,
        settings: ApiSettings,
        alarm_deleted: Callable[[int], None] | None = None,
        rollouts: RolloutService | None = None,
    ) -> ApiContext:
        """Build the context (the assets are read and checked here, once)."""
        overview = OverviewCache(store, max_age_s=settings.overview_max_age_s)
        context = cls(
            store=store,
            tokens=tokens,
            feed=feed,
            send_command=send_command,
            settings=settings,
            assets=Assets(settings.assets_dir),
            stream=LiveStream(feed, store, overview, client_queue=settings.live_queue),
            overview=overview,
            token_limiter=RateLimiter(settings.token_limit),
            anonymous_limiter=RateLimiter(settings.anonymous_limit),
        )
        if alarm_deleted is not None:
            context.alarm_deleted = alarm_deleted
        context.rollouts = rollouts
        return context
