"""A running API over a real SQLite store seeded with a sample fleet: for tests, the benchmark and screenshots.

Everything is real (store, token file, live feed, uvicorn on a free loopback port); only the command
sender is a recorder, because the broker is not part of the API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from bmsgate.fleet.protocol import CommandMessage
from bmsgate.fleet.server.api.app import create_app
from bmsgate.fleet.server.api.context import CommandSender
from bmsgate.fleet.server.api.sample_fleet import SampleSite, seed_fleet
from bmsgate.fleet.server.api.server import HttpServer
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.auth import Role, TokenStore
from bmsgate.fleet.server.live import LiveFeed
from bmsgate.fleet.server.rollouts.service import RolloutService, SignDesired
from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.repository import Repository

__all__ = ["RunningFleet", "running_fleet"]


@dataclasses.dataclass(slots=True)
class RunningFleet:
    """What a test talks to."""

    url: str
    store: Repository
    feed: LiveFeed
    tokens: TokenStore
    sites: list[SampleSite]
    viewer: str
    technician: str
    admin: str
    now: float
    commands: list[tuple[str, CommandMessage]] = dataclasses.field(default_factory=list)
    deleted_alarms: list[int] = dataclasses.field(default_factory=list)
    """Ids the API reported as closed or deleted (what the alarm engine is told to forget)."""
    rollouts: RolloutService | None = None
    """The rollout service, when `running_fleet` was given a signer."""


@contextlib.asynccontextmanager
async def running_fleet(
    data_dir: Path,
    *,
    sites: int = 12,
    history: int = 6,
    step_s: float = 60.0,
    settings: ApiSettings | None = None,
    send_command: CommandSender | None = None,
    sign_desired: SignDesired | None = None,
    templated: bool = False,
    store_settings: StoreSettings | None = None,
    before_serving: Callable[[Repository], Awaitable[None]] | None = None,
) -> AsyncIterator[RunningFleet]:
    """Seed a store in `data_dir` with `sites` sites and serve the API on a free port until the context ends.

    Commands go to `send_command`, by default a recorder filling :attr:`RunningFleet.commands`. With
    `sign_desired`, rollouts are on (:attr:`RunningFleet.rollouts`; nothing publishes unless a test steps it).
    `templated` seeds fast (see :func:`~.sample_fleet.seed_fleet`); `store_settings` picks another store
    (e.g. PostgreSQL) than SQLite in `data_dir`; `before_serving` writes more to the seeded store before the
    API starts (and reads it).
    """
    store = await open_store(store_settings or StoreSettings(data_dir=data_dir / "store"))
    try:
        now = time.time()
        seeded = await seed_fleet(store, sites, now=now, history=history, step_s=step_s, templated=templated)
        await store.rollup(now + 3600)
        if before_serving is not None:
            await before_serving(store)
        tokens = TokenStore(data_dir)
        feed = LiveFeed()
        fleet = RunningFleet(
            url="",
            store=store,
            feed=feed,
            tokens=tokens,
            sites=seeded,
            viewer=tokens.create(Role.VIEWER, "customer"),
            technician=tokens.create(Role.TECHNICIAN, "tech"),
            admin=tokens.create(Role.ADMIN, "admin"),
            now=now,
            rollouts=None if sign_desired is None else RolloutService(store, sign_desired, feed=feed),
        )

        async def record(gateway_id: str, command: CommandMessage) -> None:
            fleet.commands.append((gateway_id, command))

        app = create_app(
            store=store,
            tokens=tokens,
            feed=feed,
            send_command=send_command or record,
            settings=settings,
            alarm_deleted=fleet.deleted_alarms.append,
            rollouts=fleet.rollouts,
        )
        async with HttpServer(app, port=0) as server:
            fleet.url = server.url
            yield fleet
        feed.close()
    finally:
        await store.close()
