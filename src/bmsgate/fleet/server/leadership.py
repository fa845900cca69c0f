"""Cluster mode's leader election: exactly one of several server processes runs the singletons.

The singletons are what must not run twice against one store: the alarm engine (its per-gateway state and
notifications), the rollout service (its planning lock is in memory), TUF re-signing and store
maintenance. The processes compete for one PostgreSQL session-level advisory lock, each on a connection of
its own (:class:`~bmsgate.fleet.server.store.postgres_lock.AdvisoryLock`); the holder runs the singletons for as
long as it holds it:

- a follower tries to take the lock every :attr:`Leadership.poll_s`, and once it has it, holds it for
  :attr:`Leadership.takeover_grace_s` before it leads (an old leader whose session PostgreSQL ended while
  it lives stops within ``check_s + check_timeout_s``: no two alarm engines at once);
- when the leader process dies, the kernel closes its socket, its PostgreSQL backend ends and the lock is
  free: a follower takes over within ``poll_s`` plus the grace plus its singletons' start (measured in
  ``tests/fleet/scale/test_cluster_processes.py``);
- the leader checks its lock's session every :attr:`Leadership.check_s` (bounded by
  :attr:`Leadership.check_timeout_s`) and stops its singletons as soon as a check fails, so a leader cut off
  from PostgreSQL stops before PostgreSQL itself notices the dead session and lets another take over (about
  20 s: the TCP keepalives the lock session sets, see :mod:`~bmsgate.fleet.server.store.postgres_lock`;
  keep ``check_s + check_timeout_s`` below that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from bmsgate.errors import BmsgateError
from bmsgate.fleet.server.ingest import BatchObserver
from bmsgate.fleet.server.store.postgres_lock import AdvisoryLock
from bmsgate.fleet.server.store.repository import IngestBatch, WriteResult

__all__ = ["LEADER_LOCK_KEY", "LOCK_SESSION_PREFIX", "LeaderOnly", "Leadership", "lock_application_name"]

_log = logging.getLogger(__name__)

LEADER_LOCK_KEY: Final = 0x626D_7367_6C64  # "bmsgld": one fleet per database
LOCK_SESSION_PREFIX: Final = "bmsgate-server-"


def lock_application_name(pid: int) -> str:
    """The ``application_name`` of a process's lock session (``pg_stat_activity``: the group's processes)."""
    return f"{LOCK_SESSION_PREFIX}{pid}"


class Leadership:
    """Competes for the lock; ``await run(singletons)`` until cancelled."""

    def __init__(
        self,
        postgres_url: str,
        *,
        poll_s: float = 1.0,
        check_s: float = 1.0,
        check_timeout_s: float = 3.0,
        takeover_grace_s: float | None = None,
        key: int = LEADER_LOCK_KEY,
    ) -> None:
        self.poll_s = poll_s
        self.check_s = check_s
        self.check_timeout_s = check_timeout_s
        self.takeover_grace_s = check_s + check_timeout_s if takeover_grace_s is None else takeover_grace_s
        """How long a new holder of the lock waits before it leads (default ``check_s + check_timeout_s``)."""
        self._lock = AdvisoryLock(postgres_url, key, name=lock_application_name(os.getpid()))
        self.is_leader = False
        self.terms = 0
        """Times this process became the leader."""
        self.became_leader_at: float | None = None
        """``time.time()`` when it last did."""

    def current_term(self) -> int:
        """The number of the term this process leads or last led (0: never); the alarm engine's ``term``."""
        return self.terms

    async def run(self, singletons: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Follow, and lead (running ``singletons()``) whenever this process holds the lock."""
        try:
            while True:
                if await self._acquired():
                    if await self._old_leader_waited_out():
                        await self._lead_while_held(singletons)
                    else:
                        await self._lock.release()
                await asyncio.sleep(self.poll_s)
        finally:
            await self._lock.release()

    async def _acquired(self) -> bool:
        try:
            return await self._lock.try_acquire()
        except BmsgateError as exc:
            _log.warning("cluster: cannot try the leader lock (again in %.1f s): %s", self.poll_s, exc)
            return False

    async def _lead_while_held(self, singletons: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.is_leader = True
        self.terms += 1
        self.became_leader_at = time.time()
        _log.info("cluster: this process (pid %d) leads: running the singletons", os.getpid())
        try:
            await self._lead(singletons)
        finally:
            self.is_leader = False
            await self._lock.release()
        _log.warning("cluster: leadership lost; following")

    async def _old_leader_waited_out(self) -> bool:
        """Hold the lock `takeover_grace_s` before leading; False if it was lost meanwhile.

        The lock is free not only when its holder died: PostgreSQL also ends a session that is alive
        (a terminated backend, a restart). That old leader still runs its singletons until its next check
        fails, at most ``check_s + check_timeout_s`` later; waiting that long keeps two alarm engines from
        opening and notifying the same alarm twice. It costs every takeover that wait.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.takeover_grace_s
        while (remaining := deadline - loop.time()) > 0:
            await asyncio.sleep(min(self.check_s, remaining))
            try:
                async with asyncio.timeout(self.check_timeout_s):
                    await self._lock.check()
            except (BmsgateError, TimeoutError) as exc:
                _log.warning("cluster: the leader lock was lost while waiting to lead: %s", exc)
                return False
        return True

    async def _lead(self, singletons: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run the singletons until a check of the lock fails (returns) or they end (raises if they failed)."""
        work = asyncio.create_task(singletons(), name="cluster-singletons")
        try:
            while not work.done():
                done, _ = await asyncio.wait({work}, timeout=self.check_s)
                if done:
                    break
                try:
                    async with asyncio.timeout(self.check_timeout_s):
                        await self._lock.check()
                except (BmsgateError, TimeoutError) as exc:
                    _log.error("cluster: the leader lock's session failed a check: %s", exc)
                    return
            await work  # the singletons never end by themselves: surface why they did
            raise BmsgateError("the cluster singletons ended unexpectedly")
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work


class LeaderOnly:
    """A batch observer that passes batches on only while this process leads (the alarm engine's input)."""

    def __init__(self, observer: BatchObserver, leadership: Leadership) -> None:
        self._observer = observer
        self._leadership = leadership

    @property
    def active(self) -> bool:
        """Whether batches are passed on now (the fan-out skips decoding what nobody takes)."""
        return self._leadership.is_leader

    def observe(self, batch: IngestBatch, result: WriteResult) -> None:
        """Hand on while leading; drop otherwise (the leader sees the same batch)."""
        if self._leadership.is_leader:
            self._observer.observe(batch, result)
