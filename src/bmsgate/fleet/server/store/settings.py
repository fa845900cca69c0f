"""Where the fleet store lives and how long it keeps what."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DAY", "SQLITE_FILE", "StoreSettings"]

DAY: Final = 86400.0
SQLITE_FILE: Final = "fleet.sqlite3"
"""The SQLite database's name in the data directory (with its ``-wal`` and ``-shm`` companions)."""


class StoreSettings(BaseModel):
    """One store: SQLite in ``data_dir`` (default) or PostgreSQL at ``postgres_url``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    data_dir: Path | None = None
    """Directory of the SQLite database (created if missing)."""
    postgres_url: str | None = None
    """``postgresql://user:pass@host:port/db``: use PostgreSQL instead of SQLite."""
    raw_retention_days: float = Field(default=14, gt=0)
    """Raw samples older than this are deleted (their rollups stay)."""
    minute_retention_days: float = Field(default=90, gt=0)
    hour_retention_days: float = Field(default=3650, gt=0)
    event_retention_days: float = Field(default=365, gt=0)
    closed_alarm_retention_days: float = Field(default=365, gt=0)
    partitions_ahead_days: int = Field(default=3, ge=1, le=60)
    """PostgreSQL: daily sample partitions created this far ahead."""

    @model_validator(mode="after")
    def _check_backend(self) -> Self:
        if (self.data_dir is None) == (self.postgres_url is None):
            raise ValueError("give exactly one of data_dir (SQLite) or postgres_url (PostgreSQL)")
        if not self.raw_retention_days <= self.minute_retention_days <= self.hour_retention_days:
            raise ValueError("retention must not shrink from raw to minute to hour rollups")
        return self

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self.data_dir is not None else "postgresql"
