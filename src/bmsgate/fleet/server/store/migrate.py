"""The migration adapter: the only module that imports yoyo-migrations.

Each backend has its own folder of SQL migrations under ``migrations/`` (shipped as package data); yoyo
records what it applied in its own tables and takes a lock, so two servers starting at once do not migrate
twice. A new schema change is a new numbered file in both folders, never an edit of an applied one.
"""

from __future__ import annotations

import importlib.resources
import logging
from typing import Final

import yoyo
import yoyo.exceptions

from bmsgate.fleet.server.store.repository import StoreError

__all__ = ["MIGRATION_BACKENDS", "apply_migrations", "pending_migrations"]

# yoyo reports every migration step at INFO; a server start should say one line, not a dozen.
logging.getLogger("yoyo").setLevel(logging.WARNING)

MIGRATION_BACKENDS: Final = ("sqlite", "postgresql")


def _folder(backend: str) -> str:
    if backend not in MIGRATION_BACKENDS:
        raise StoreError(f"no migrations for backend {backend!r}")
    return str(importlib.resources.files("bmsgate.fleet.server.store.migrations") / backend)


def _yoyo_url(backend: str, target: str) -> str:
    """Yoyo's URL: ``sqlite:///<path>`` or ``postgresql+psycopg://...`` (psycopg 3)."""
    if backend == "sqlite":
        return f"sqlite:///{target}"
    scheme, _, rest = target.partition("://")
    if scheme not in ("postgresql", "postgres"):
        raise StoreError(f"not a PostgreSQL URL: {scheme}://...")
    return f"postgresql+psycopg://{rest}"


def apply_migrations(backend: str, target: str) -> list[str]:
    """Apply every pending migration (blocking: run it in a thread).

    Args:
        backend: ``sqlite`` or ``postgresql``.
        target: the SQLite file path, or the PostgreSQL URL.

    Returns:
        The ids of the migrations applied now.

    Raises:
        StoreError: the database is unreachable, locked by another migrating server for too long, or a
            migration failed (it is rolled back).
    """
    try:
        migrations = yoyo.read_migrations(_folder(backend))
        database = yoyo.get_backend(_yoyo_url(backend, target))
        with database.lock(timeout=60):
            todo = database.to_apply(migrations)
            database.apply_migrations(todo)
        applied = [migration.id for migration in todo]
        database.connection.close()
    except StoreError:
        raise
    except (yoyo.exceptions.LockTimeout, yoyo.exceptions.MigrationConflict) as exc:
        raise StoreError(f"migrating the {backend} store: {exc}") from exc
    except Exception as exc:  # the database driver's own errors (sqlite3, psycopg) have no common base
        raise StoreError(f"migrating the {backend} store: {type(exc).__name__}: {exc}") from exc
    return applied


def pending_migrations(backend: str, target: str) -> list[str]:
    """Ids of the migrations not yet applied (for ``--check`` style diagnostics).

    Raises:
        StoreError: the database is unreachable.
    """
    try:
        migrations = yoyo.read_migrations(_folder(backend))
        database = yoyo.get_backend(_yoyo_url(backend, target))
        pending = [migration.id for migration in database.to_apply(migrations)]
        database.connection.close()
    except Exception as exc:
        raise StoreError(f"reading the {backend} store's migrations: {type(exc).__name__}: {exc}") from exc
    return pending
