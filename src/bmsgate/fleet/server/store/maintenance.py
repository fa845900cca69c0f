"""The store's periodic work: rollups every minute, retention every hour."""

from __future__ import annotations

import asyncio
import logging
import time

from bmsgate.fleet.server.store.repository import Repository, StoreError

__all__ = ["maintain"]

_log = logging.getLogger(__name__)


async def maintain(store: Repository, *, rollup_every_s: float = 60.0, retention_every_s: float = 3600.0) -> None:
    """Run rollups and retention until cancelled (a failure is logged and retried next round)."""
    last_retention = 0.0
    while True:
        now = time.time()
        try:
            await store.rollup(now)
            if now - last_retention >= retention_every_s:
                removed = await store.apply_retention(now)
                last_retention = now
                _log.info("store retention: %s", removed)
        except StoreError as exc:
            _log.warning("store maintenance failed: %s", exc)
        await asyncio.sleep(rollup_every_s)
