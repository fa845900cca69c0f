"""A PostgreSQL session-level advisory lock on a connection of its own (cluster mode's leader election).

The second module that imports psycopg, next to :mod:`.postgres` (the store): a lock is not the store's
concern, and the store's module is at its length limit. PostgreSQL holds a session-level advisory lock for
as long as the session that took it lives, so a holder that dies (its socket closes, its backend ends)
gives it up at once; a holder that vanishes without closing its socket (a host without power, a network
partition) is noticed by PostgreSQL's TCP keepalives, which the session sets short (see
:data:`_DEAD_HOLDER_SETTINGS`); :meth:`AdvisoryLock.check` tells a live holder whether its session is
still there.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from bmsgate.fleet.server.store.repository import StoreError

__all__ = ["AdvisoryLock"]

_CONNECT_TIMEOUT_S: Final = 10
_DEAD_HOLDER_SETTINGS: Final = (
    ("tcp_keepalives_idle", 10),
    ("tcp_keepalives_interval", 5),
    ("tcp_keepalives_count", 2),
    ("tcp_user_timeout", 20_000),
)
"""How PostgreSQL's end of the lock session notices a holder that vanished without closing its socket (its
host lost power, a network partition): about 20 s, probes when idle, a bound on unacknowledged replies.
Without them the operating system's defaults apply (Linux: 2 h of idleness before the first probe) and the
whole fleet has no leader for that long. Longer than a holder's own check (:class:`.leadership.Leadership`:
``check_s`` + ``check_timeout_s``, 4 s by default), so a cut-off holder stops before its lock is freed."""


class AdvisoryLock:
    """One lock key, tried and held on one dedicated connection."""

    def __init__(self, url: str, key: int, *, name: str) -> None:
        """Nothing connects yet.

        Args:
            url: the PostgreSQL URL.
            key: the lock's key (a bigint).
            name: the session's ``application_name`` (``pg_stat_activity`` shows it).
        """
        self._url = url
        self._key = key
        self._name = name
        self._db: psycopg.AsyncConnection[Any] | None = None

    async def try_acquire(self) -> bool:
        """Take the lock if no other session holds it (connecting first); not to be called while holding it.

        Raises:
            StoreError: PostgreSQL cannot be reached.
        """
        try:
            if self._db is None or self._db.closed:
                self._db = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S, application_name=self._name
                )
                for setting, value in _DEAD_HOLDER_SETTINGS:
                    await self._db.execute("SELECT set_config(%s, %s, false)", (setting, str(value)))
            cursor = await self._db.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
            row = await cursor.fetchone()
        except psycopg.Error as exc:
            await self.release()
            raise StoreError(f"PostgreSQL: advisory lock: {exc}") from exc
        return bool(row and row[0])

    async def check(self) -> None:
        """Return if the lock's session is alive.

        Raises:
            StoreError: the session (and the lock with it) is gone, or was never there.
        """
        if self._db is None:
            raise StoreError("PostgreSQL: the advisory lock is not held")
        try:
            await self._db.execute("SELECT 1")
        except psycopg.Error as exc:
            await self.release()
            raise StoreError(f"PostgreSQL: the advisory lock's session is lost: {exc}") from exc

    async def release(self) -> None:
        """End the session (and so the lock, if held); idempotent."""
        db, self._db = self._db, None
        if db is not None:
            await db.close()
