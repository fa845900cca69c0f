"""The agent's side of the rollout channels: the desired-state hook and the queue of ``reported`` payloads.

An update passes through several phases in seconds (downloading, verified, staged, active-pending, ...);
the server counts them per rollout, so each report is kept, in order, until the broker acknowledged it
(a bounded queue: while offline the oldest give way, the newest stays). The newest is published again
after every reconnect; the topic is retained, so the server always finds the gateway's last word.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from bmsgate.fleet.updates import ReportedState

__all__ = ["REPORTED_QUEUE", "DesiredStateHandler", "ReportedOutbox", "UpdateReporter"]

REPORTED_QUEUE: Final = 32
"""Reports kept while offline (an update has fewer phases)."""

UpdateReporter = Callable[[ReportedState], None]
"""Publishes one phase of an update on the retained ``reported`` topic (QoS 1); returns at once."""


class DesiredStateHandler(Protocol):
    """Applies the server's desired state, reporting each phase through the agent."""

    async def resume(self, report: UpdateReporter) -> None:
        """Once at the agent's start: report what a restart left, resume what it interrupted."""

    async def take(self, payload: bytes, report: UpdateReporter) -> None:
        """Apply one raw retained ``desired`` payload (the newest; the same payload is not handed over twice)."""


class ReportedOutbox:
    """The ``reported`` payloads not yet acknowledged, oldest first, and the newest for a reconnect."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._queue: collections.deque[bytes] = collections.deque(maxlen=REPORTED_QUEUE)
        self.latest: bytes | None = None
        self._republish = False

    def put(self, payload: bytes) -> None:
        """Queue one payload and wake the sender."""
        self.latest = payload
        self._queue.append(payload)
        self._wake()

    def reconnected(self) -> None:
        """A new session: the newest payload goes out again (unless queued ones are still to go)."""
        self._republish = self.latest is not None and not self._queue

    async def send(self, publish: Callable[[bytes], Awaitable[None]]) -> None:
        """Publish what is due; a payload leaves the queue only once `publish` returned (acknowledged)."""
        while self._queue:
            await publish(self._queue[0])
            self._queue.popleft()
            self._republish = False
        if self._republish and self.latest is not None:
            self._republish = False
            await publish(self.latest)
