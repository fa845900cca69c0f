"""The fleet store: one interface (:mod:`.repository`), SQLite and PostgreSQL behind it.

Open it with :func:`open_store`; the backend modules are imported only when used, so the SQLite default
needs no PostgreSQL driver.
"""

from __future__ import annotations

from bmsgate.fleet.server.store.repository import Repository, StoreError
from bmsgate.fleet.server.store.settings import StoreSettings

__all__ = ["Repository", "StoreError", "StoreSettings", "open_store"]


async def open_store(settings: StoreSettings) -> Repository:
    """Open (and migrate) the store `settings` name.

    Raises:
        StoreError: the database cannot be opened or migrated.
    """
    if settings.postgres_url is not None:
        from bmsgate.fleet.server.store.postgres import PostgresRepository  # noqa: PLC0415 - optional driver

        return await PostgresRepository.open(settings)
    from bmsgate.fleet.server.store.sqlite import SqliteRepository  # noqa: PLC0415 - symmetric with postgres

    return await SqliteRepository.open(settings)
