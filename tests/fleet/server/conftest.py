"""Shared fleet-server fixtures: a throwaway PostgreSQL cluster, a plain Mosquitto, a store of each backend.

``postgres_cluster`` (session): ``initdb`` in a temporary directory and ``postgres`` on a free port, run as
the ``postgres`` OS user (PostgreSQL refuses to run as root), fsync off. Each test using ``postgres_url``
gets a fresh database. Skipped with a clear reason only when the PostgreSQL server binaries are missing.

``mosquitto`` (function): a Mosquitto on a free port with anonymous access and persistence in tmp_path;
``restart()`` stops and starts it on the same port.

``store`` (function, parametrized ``sqlite`` / ``postgresql``): an open, migrated, empty repository.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO, Final

import psycopg
import pytest

from bmsgate.fleet.server.store import Repository, StoreSettings, open_store
from bmsgate.mqtt.broker import find_mosquitto, free_port
from tests.mosquitto import Mosquitto

PG_BIN: Final = Path("/usr/lib/postgresql/15/bin")
MOSQUITTO = find_mosquitto()
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto binary not installed")


def _postgres_binaries() -> Path | None:
    for candidate in (PG_BIN, *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)):
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    return None


class PostgresCluster:
    """A running throwaway cluster; :meth:`new_database` hands out empty databases."""

    def __init__(self, binaries: Path, directory: Path) -> None:
        self.binaries = binaries
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._counter = 0
        self.durable_commits = False
        """Off (fast tests): a commit may be lost if the server crashes; a test that restarts it turns it on."""

    def _as_postgres(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    def start(self) -> None:
        data = self.directory / "data"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        subprocess.run(
            [*self._as_postgres(), str(self.binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
            check=True,
            capture_output=True,
        )
        with (self.directory / "postgres.log").open("ab") as log:
            self.process = self._spawn(data, log)
        self._wait_until_accepting("start")

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (fast shutdown: every connection is cut), wait `down_s`, start it again."""
        if self.process is not None:
            # Fast shutdown (SIGTERM would wait for every client to leave); pg_ctl signals the postmaster itself.
            subprocess.run(
                [
                    *self._as_postgres(),
                    str(self.binaries / "pg_ctl"),
                    "-D",
                    str(self.directory / "data"),
                    "-m",
                    "fast",
                    "stop",
                ],
                check=True,
                capture_output=True,
            )
            self.process.wait(30)
        time.sleep(down_s)
        with (self.directory / "postgres.log").open("ab") as log:
            self.process = self._spawn(self.directory / "data", log)
        self._wait_until_accepting("start again")

    def _wait_until_accepting(self, what: str) -> None:
        """Return once the server takes connections (30 s at most, or as soon as it has exited)."""
        assert self.process is not None
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not {what}: {self.log()}") from None
                time.sleep(0.1)

    def _spawn(self, data: Path, log: BinaryIO) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *self._as_postgres(),
                str(self.binaries / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.directory),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                f"synchronous_commit={'on' if self.durable_commits else 'off'}",
                "-c",
                "full_page_writes=off",
            ],
            stdout=log,
            stderr=log,
        )

    def log(self) -> str:
        return (self.directory / "postgres.log").read_text(errors="replace")[-2000:]

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        self._counter += 1
        name = f"test_{self._counter}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) not installed: apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root but there is no 'postgres' OS user to run the server as")
    directory = Path(tempfile.mkdtemp(prefix="bmsgate-pg-"))
    cluster = PostgresCluster(binaries, directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Repository]:
    if request.param == "sqlite":
        settings = StoreSettings(data_dir=tmp_path / "data")
    else:
        url = request.getfixturevalue("postgres_url")
        settings = StoreSettings(postgres_url=url)
    repository = await open_store(settings)
    try:
        yield repository
    finally:
        await repository.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed: apt-get install mosquitto")
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    # Persistent, with queues big enough that a stopped ingest never loses messages (as the fleet broker).
    queues = "allow_anonymous true\nmax_queued_messages 1000000\nmax_inflight_messages 0\n"
    broker = Mosquitto(directory, extra=queues, persistence=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
