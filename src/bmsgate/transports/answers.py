"""Answering keep-alive notifications (engine 6, construct ``gatt.answer_notify``).

Dometic's boards keep a connection only while every notification on two keep-alive characteristics is answered
on another one: one echoed, one answered with a byte that toggles (FF, DF, FF, ...). A `NotificationAnswerer`
does that for one characteristic, outside the poll session: the notifications are no frames.

A hostile or broken board can notify as fast as the link allows, so the answers are bounded: at most one is
being written, at most one more waits (a newer notification replaces the waiting one: an echo answers the
newest bytes, a toggle advances once per answer written, not per notification), and answers are at least
`MIN_ANSWER_INTERVAL` apart. Memory is one pending chunk, writes are at most ``1 / MIN_ANSWER_INTERVAL`` per
second per characteristic, whatever arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from bmsgate.errors import DeviceError
from bmsgate.protocols.definition import NotificationAnswer

__all__ = ["MAX_ECHO", "MIN_ANSWER_INTERVAL", "NotificationAnswerer"]

_LOGGER = logging.getLogger(__name__)

MIN_ANSWER_INTERVAL: Final = 0.1
"""Seconds between two answers on one characteristic (aiobmsble waits 0.1 s after each answer, too)."""
MAX_ECHO: Final = 512
"""Bytes an echo may carry (one ATT value); a longer notification is not answered."""

AnswerWriter = Callable[[bytes], Awaitable[None]]
"""Writes one answer to the answer characteristic; raises a `DeviceError` when it fails."""


class NotificationAnswerer:
    """Answers every notification of one characteristic, bounded in memory and rate.

    Args:
        answer: what the definition says (echo or toggle, the bytes, how long to wait for the first).
        write: writes one answer (the transport's, which maps library errors to `DeviceError`).
        label: names the characteristic in log lines.
        min_interval: seconds between two answers (`MIN_ANSWER_INTERVAL`; tests may shorten it).
    """

    def __init__(
        self,
        answer: NotificationAnswer,
        write: AnswerWriter,
        *,
        label: str,
        min_interval: float = MIN_ANSWER_INTERVAL,
    ) -> None:
        self.answer = answer
        self._write = write
        self._label = label
        self._min_interval = min_interval
        self._next_toggle = answer.first or b""
        self._pending: bytes | None = None
        self._wake = asyncio.Event()
        self.answered_once = asyncio.Event()
        """Set when the first answer of this connection was written."""
        self._task: asyncio.Task[None] | None = None
        self.received = 0
        """Notifications seen."""
        self.sent = 0
        """Answers written."""
        self.coalesced = 0
        """Notifications whose answer a newer one replaced before it was written."""
        self.refused = 0
        """Notifications not answered: an echo longer than `MAX_ECHO`, or empty."""
        self.failed = 0
        """Answers whose write failed."""

    def start(self) -> None:
        """Start the writer (once per connection)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"answer {self._label}")

    async def stop(self) -> None:
        """Stop the writer; a waiting answer is dropped (the connection is going away)."""
        task, self._task = self._task, None
        self._pending = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def on_notify(self, _sender: Any, data: bytearray) -> None:
        """The notification callback (bleak calls it in the event loop)."""
        self.received += 1
        if self._task is None:
            return  # stopped: nothing is answered after the connection is released
        if self.answer.answer == "echo" and not 0 < len(data) <= MAX_ECHO:
            self.refused += 1
            return
        if self._pending is not None:
            self.coalesced += 1
        self._pending = bytes(data) if self.answer.answer == "echo" else b""
        self._wake.set()

    def _answer_to(self, notification: bytes) -> bytes:
        return notification if self.answer.answer == "echo" else self._next_toggle

    def _advance(self) -> None:
        # Only a written answer moves the toggle on: the board saw nothing of a failed one.
        if self.answer.answer == "toggle":
            flip = self.answer.flip or b""
            self._next_toggle = bytes(a ^ b for a, b in zip(self._next_toggle, flip, strict=True))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            notification, self._pending = self._pending, None
            if notification is None:
                continue
            try:
                await self._write(self._answer_to(notification))
            except DeviceError as exc:
                # The link is most likely going away; its loss is reported by the transport's disconnect path.
                self.failed += 1
                _LOGGER.debug("%s: answering a keep-alive notification failed: %s", self._label, exc)
            else:
                self._advance()
                self.sent += 1
                self.answered_once.set()
            await asyncio.sleep(self._min_interval)
