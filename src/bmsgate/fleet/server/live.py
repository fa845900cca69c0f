"""The in-process live feed: ingest and the alarm engine publish, the API's websocket/SSE streams it.

Publishing never waits: each subscriber has a bounded queue, and a slow subscriber loses its oldest updates
(counted in :attr:`Subscription.dropped`, so the stream can tell its client to reload) rather than holding
up ingest or growing without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

__all__ = ["LiveFeed", "LiveKind", "LiveUpdate", "Subscription"]

_log = logging.getLogger(__name__)

DEFAULT_QUEUE: Final = 1000


class LiveKind(enum.StrEnum):
    """What changed."""

    GATEWAY = "gateway"
    """State (versions, packs, location) or availability; ``data`` has the changed keys."""
    TELEMETRY = "telemetry"
    """New readings; ``data``: ``{"at", "batteries": {id: full snapshot}, "inverter"}``."""
    EVENT = "event"
    ALARM = "alarm"
    """An alarm opened, was acknowledged or closed; ``data`` is the alarm record."""
    GATEWAY_DELETED = "gateway_deleted"
    ROLLOUT = "rollout"
    """A rollout changed (created, a group started, a gateway answered, a user acted); ``gateway`` is empty,
    ``data``: ``{"id", "state"}``."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LiveUpdate:
    """One change, ready for JSON."""

    kind: LiveKind
    gateway: str
    at: float
    data: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form sent to a browser."""
        return {"kind": self.kind.value, "gateway": self.gateway, "at": self.at, "data": dict(self.data)}


class Subscription:
    """One subscriber's bounded queue; iterate it (``async for update in subscription``)."""

    def __init__(self, maxsize: int, gateway: str | None) -> None:
        self._queue: collections.deque[LiveUpdate] = collections.deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        self.gateway = gateway
        """Only updates of this gateway (None: all)."""
        self.dropped = 0
        """Updates lost because this subscriber fell behind (oldest first)."""

    def _offer(self, update: LiveUpdate) -> None:
        if self.gateway is not None and update.gateway != self.gateway:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(update)
        self._ready.set()

    def _close(self) -> None:
        self._closed = True
        self._ready.set()

    def pending(self) -> int:
        """Updates waiting."""
        return len(self._queue)

    async def get(self) -> LiveUpdate:
        """The next update (waits).

        Raises:
            StopAsyncIteration: the feed was closed.
        """
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LiveUpdate:
        return await self.get()


class LiveFeed:
    """Fan-out of :class:`LiveUpdate` s to any number of subscribers (one event loop)."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self.published = 0

    @property
    def subscriber_count(self) -> int:
        """Subscribers now."""
        return len(self._subscribers)

    def publish(self, update: LiveUpdate) -> None:
        """Hand `update` to every subscriber; never waits."""
        self.published += 1
        for subscription in self._subscribers:
            subscription._offer(update)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, *, maxsize: int = DEFAULT_QUEUE, gateway: str | None = None
    ) -> AsyncIterator[Subscription]:
        """Receive updates while the context is open.

        Args:
            maxsize: queue bound; beyond it the oldest update is dropped and counted.
            gateway: only this gateway's updates.
        """
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        subscription = Subscription(maxsize, gateway)
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)
            if subscription.dropped:
                _log.info("live subscriber fell behind: %d updates dropped", subscription.dropped)

    def close(self) -> None:
        """End every subscriber's iteration (at shutdown)."""
        for subscription in self._subscribers:
            subscription._close()
