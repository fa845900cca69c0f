"""The leader lock's session on a real PostgreSQL: a holder that vanishes without a word is noticed soon."""

from __future__ import annotations

from bmsgate.fleet.server.leadership import Leadership
from bmsgate.fleet.server.store.postgres_lock import AdvisoryLock


async def test_postgresql_notices_a_vanished_lock_holder_within_seconds_not_hours(postgres_url: str) -> None:
    # A holder whose host lost power never closes its socket: only TCP keepalives (or the timeout on an
    # unacknowledged reply) end its session and free the lock. The operating system's defaults take 2 h.
    lock = AdvisoryLock(postgres_url, 4242, name="bmsgate-test-lock")
    try:
        assert await lock.try_acquire()
        session = lock._db
        assert session is not None
        cursor = await session.execute(
            "SELECT current_setting('tcp_keepalives_idle')::int, current_setting('tcp_keepalives_interval')::int,"
            " current_setting('tcp_keepalives_count')::int, current_setting('tcp_user_timeout')::int"
        )
        row = await cursor.fetchone()
        assert row is not None
        idle, interval, count, user_timeout_ms = row
        noticed_after = idle + interval * count
        assert 0 < noticed_after <= 60
        assert 0 < user_timeout_ms <= 60_000
        # ... but after a cut-off holder has stopped by itself (its own checks fail first): no two leaders.
        defaults = Leadership(postgres_url)
        assert noticed_after > defaults.check_s + defaults.check_timeout_s
        assert user_timeout_ms / 1000 > defaults.check_s + defaults.check_timeout_s
    finally:
        await lock.release()
