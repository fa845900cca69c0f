"""Cancellation that always ends, even around code that swallows it (Python 3.11 ``asyncio.wait_for``).

On Python 3.11 ``asyncio.wait_for`` returns normally when its inner result and a cancellation arrive in
the same loop iteration: the cancellation is lost and the task goes on as if it had never been
cancelled (fixed in 3.12). aiomqtt awaits every acknowledgement that way, so a SIGTERM that lands at the
wrong moment used to leave a task the supervisor's TaskGroup waits for forever. The helpers here bound
that: whatever an awaited task does with a cancellation, the caller ends promptly and ends cancelled.

This lives in ``runtime`` rather than next to the MQTT adapter because nothing in it knows MQTT: the
supervisor uses the same bounded stop for battery pollers it removes at run time (a BLE backend can
swallow a cancellation just the same), and the adapter only adds which of aiomqtt's calls need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

__all__ = ["join", "run_isolated", "stop", "uninterruptible"]

_LOGGER = logging.getLogger(__name__)
_RECANCEL_INTERVAL: Final = 0.1

T = TypeVar("T")

_finishing: set[asyncio.Task[None]] = set()
"""Clean-ups of abandoned operations still waiting for them to end (strong references, so the loop keeps them)."""


async def stop(task: asyncio.Task[Any], *, grace: float, limit: float) -> bool:
    """Cancel `task` until it ends: again after `grace` seconds, then every 0.1 s, giving up after `limit`.

    A cancellation of the caller meanwhile does not cut this short (that would leave `task` running);
    it is raised once `task` has ended or been abandoned.

    Returns:
        True when `task` ended, False when it was abandoned (logged at ERROR).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    delay = grace
    interrupted = False
    ended = True
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            _LOGGER.error("task %s ignored cancellation for %.1f s; leaving it behind", task.get_name(), limit)
            ended = False
            break
        task.cancel()
        # Cancelled while waiting: finish stopping `task` first (bounded), then end cancelled ourselves.
        try:
            await asyncio.wait([task], timeout=min(delay, remaining))
        except asyncio.CancelledError:
            interrupted = True
        delay = _RECANCEL_INTERVAL
    if task.done() and not task.cancelled() and (error := task.exception()) is not None:
        _LOGGER.debug("task %s failed while stopping: %r", task.get_name(), error)
    if interrupted:
        raise asyncio.CancelledError
    return ended


async def join(task: asyncio.Task[T], *, grace: float, limit: float) -> T:
    """Await `task`; when cancelled, stop `task` as well (see :func:`stop`) and end cancelled.

    Unlike ``await task``, a cancellation is not merely forwarded once and then waited out: a task that
    carries on regardless is cancelled again, then abandoned, so the caller always ends within about
    `limit` seconds.
    """
    try:
        await asyncio.wait([task])
    except asyncio.CancelledError:
        await stop(task, grace=grace, limit=limit)
        raise
    return task.result()


async def run_isolated(coro: Coroutine[Any, Any, T], *, name: str, grace: float, limit: float) -> T:
    """Run `coro` in a task of its own and :func:`join` it.

    The own task also keeps a 3.11 TaskGroup quirk contained: a group whose child fails while the parent
    waits in ``__aexit__`` leaves the parent "cancelling" for good, which would break every later
    iteration of a retry loop in that parent.
    """
    return await join(asyncio.create_task(coro, name=name), grace=grace, limit=limit)


async def uninterruptible(
    coro: Coroutine[Any, Any, T],
    *,
    name: str,
    grace: float,
    on_abandoned: Callable[[T], Awaitable[None]],
) -> T:
    """Run an operation that must not be interrupted half-way; a cancellation still propagates at once.

    For operations that break when cancelled in the middle (aiomqtt's connect runs the socket connect
    in a thread that goes on regardless, and waits for the CONNACK with ``wait_for``). `coro` runs in a
    task of its own that is never cancelled. When the caller is cancelled, it waits up to `grace`
    seconds for the operation, and hands a successful result to `on_abandoned` (e.g. to disconnect);
    an operation still running by then is left to finish in the background, and `on_abandoned` runs
    when it does. Either way the caller ends cancelled.

    Raises:
        Whatever `coro` raises, when the caller was not cancelled.
    """
    task = asyncio.create_task(coro, name=name)
    try:
        # Not `shield`: its outer future would keep a failed operation's exception (and whatever its
        # traceback references, such as an unclosed TLS socket) alive past the caller's handling of it.
        await asyncio.wait([task])
    except asyncio.CancelledError:
        await _abandon(task, grace, on_abandoned)
        raise
    return task.result()


async def _abandon(task: asyncio.Task[T], grace: float, on_abandoned: Callable[[T], Awaitable[None]]) -> None:
    with contextlib.suppress(asyncio.CancelledError):  # cancelled again: the caller re-raises anyway
        await asyncio.wait([task], timeout=grace)
    if task.done():
        if _succeeded(task):
            await on_abandoned(task.result())
        return
    finishing = asyncio.create_task(_finish_later(task, on_abandoned), name=f"{task.get_name()}-abandoned")
    _finishing.add(finishing)
    finishing.add_done_callback(_finishing.discard)


async def _finish_later(task: asyncio.Task[T], on_abandoned: Callable[[T], Awaitable[None]]) -> None:
    await asyncio.wait([task])
    if _succeeded(task):
        await on_abandoned(task.result())


def _succeeded(task: asyncio.Task[Any]) -> bool:
    # Retrieving the exception also marks it as seen: an abandoned failure is expected, not a bug to report.
    return not task.cancelled() and task.exception() is None
