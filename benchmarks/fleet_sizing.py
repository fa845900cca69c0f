"""Rows of the sizing table (docs/fleet-scale.md): the default stack under a simulated fleet, per 1,000 gateways.

For each ``--gateways`` size: a plain Mosquitto on a free loopback port (anonymous, as ``fleet serve
--broker`` uses an existing broker), ``bmsgate fleet serve --data DIR --broker ...`` (SQLite store, ingest in
the server process, alarms, API) and ``bmsgate fleet simulate --gateways N --interval S`` against it. After
``--warmup`` s (connecting, retained states, the overview's first read) it measures for ``--duration`` s:

- telemetry msg/s the simulator sent, and the samples the store gained (read with sqlite3 afterwards):
  what reached the store;
- server CPU (user + system of ``fleet serve`` and any child, as a share of one core) and its RSS at the end;
- Mosquitto CPU and RSS;
- disk, from the stopped store's pages (``dbstat``, indexes included): bytes per raw sample times the samples
  stored per second, plus bytes per minute / hour rollup row times the rows each battery adds per day
  (1,440 / 24): MB per day, per day per 1,000 gateways, and the store a year in with the default retention
  (14 days raw, 90 days per minute, hourly rows kept);

and prints one table row per size (and a JSON line with every figure). Everything runs on this machine,
so the simulator's own CPU (printed too) is taken from the same cores.

``--postgres URL|auto`` stores in PostgreSQL instead (``auto``: a throwaway PostgreSQL 15 cluster, as the
tests start it, one new database per size; the disk figures then come from ``pg_total_relation_size`` of
each table and its partitions), and ``--ingest-workers N`` runs ``fleet serve --ingest-workers N`` (the
server's CPU and RSS then include its workers; PostgreSQL's own CPU is printed beside it).

Usage: python benchmarks/fleet_sizing.py [--gateways 1000 2000 5000] [--interval 10] [--duration 120]
       [--warmup 40] [--postgres URL|auto] [--ingest-workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.settings import SQLITE_FILE
from bmsgate.mqtt.broker import find_mosquitto, free_port

_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for child in _children(pid):
        pids += _tree(child)
    return pids


def cpu_s(pid: int) -> float:
    """User + system seconds of a process and its children still running."""
    total = 0.0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB."""
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


_ROLLUPS: Final = {"samples_minute": 1440, "samples_hour": 24}
"""Rollup tables and the rows each battery adds to them per day."""


@dataclasses.dataclass(frozen=True, slots=True)
class StoreFigures:
    """What the stopped store holds: bytes per row of the growing tables, and the fixed part."""

    raw_bytes_per_sample: float
    """The samples table and its index, per raw sample."""
    rollup_bytes_per_day_per_battery: dict[str, float]
    """Bytes of the rollup rows a battery adds per day, per rollup table."""
    batteries: int
    fixed_mb: float
    """Tables of one row per gateway, battery or alarm (they do not grow with time)."""
    tables_mb: dict[str, float]


def store_figures(data: Path) -> StoreFigures:
    """Measure the stopped server's SQLite store from its pages (``dbstat``).

    The file sizes say little during a run (the WAL grows to its high-water mark; a checkpoint lags behind
    readers), so the store is measured once the server has stopped. Each table's bytes include its indexes.
    """
    database = next(data.rglob(SQLITE_FILE))
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        sizes: dict[str, int] = {}
        for table, size in db.execute(
            "SELECT tbl_name, sum(pgsize) FROM dbstat JOIN sqlite_schema USING (name) GROUP BY tbl_name"
        ):
            sizes[table] = int(size)
        rows = {
            table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]) for table in ("samples", *_ROLLUPS)
        }
        batteries = int(db.execute("SELECT count(*) FROM batteries").fetchone()[0])
    rollup_per_day = {table: sizes.get(table, 0) / max(rows[table], 1) * per_day for table, per_day in _ROLLUPS.items()}
    growing = {"samples", "events", *_ROLLUPS}
    return StoreFigures(
        raw_bytes_per_sample=sizes.get("samples", 0) / max(rows["samples"], 1),
        rollup_bytes_per_day_per_battery=rollup_per_day,
        batteries=batteries,
        fixed_mb=sum(size for table, size in sizes.items() if table not in growing) / 1e6,
        tables_mb={table: round(size / 1e6, 2) for table, size in sorted(sizes.items(), key=lambda item: -item[1])},
    )


_POSTGRES_SIZES: Final = """
SELECT coalesce(p.relname, c.relname), sum(pg_total_relation_size(c.oid))
FROM pg_class c
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r'
GROUP BY 1
"""
"""Bytes per table, a partitioned table's partitions added to it (indexes and TOAST included)."""


async def _postgres_query(url: str, sql: str) -> list[tuple[Any, ...]]:
    store = await open_store(StoreSettings(postgres_url=url))
    try:
        return await store.extension_query(sql)
    finally:
        await store.close()


def store_figures_postgres(url: str) -> StoreFigures:
    """The same figures from a PostgreSQL store (table sizes from the catalog; after ``VACUUM``-free writes)."""
    sizes = {str(table): int(size) for table, size in asyncio.run(_postgres_query(url, _POSTGRES_SIZES))}
    counts = asyncio.run(
        _postgres_query(
            url,
            "SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM samples_minute), "
            "(SELECT count(*) FROM samples_hour), (SELECT count(*) FROM batteries)",
        )
    )[0]
    rows = {"samples": int(counts[0]), "samples_minute": int(counts[1]), "samples_hour": int(counts[2])}
    rollup_per_day = {table: sizes.get(table, 0) / max(rows[table], 1) * per_day for table, per_day in _ROLLUPS.items()}
    growing = {"samples", "events", *_ROLLUPS}
    return StoreFigures(
        raw_bytes_per_sample=sizes.get("samples", 0) / max(rows["samples"], 1),
        rollup_bytes_per_day_per_battery=rollup_per_day,
        batteries=int(counts[3]),
        fixed_mb=sum(size for table, size in sizes.items() if table not in growing) / 1e6,
        tables_mb={table: round(size / 1e6, 2) for table, size in sorted(sizes.items(), key=lambda item: -item[1])},
    )


def stored_samples_postgres(url: str) -> int:
    """Raw samples in the PostgreSQL store."""
    return int(asyncio.run(_postgres_query(url, "SELECT count(*) FROM samples"))[0][0])


def stored_samples(data: Path) -> int:
    """Raw samples in the SQLite store (read-only, beside the running server)."""
    for database in data.rglob(SQLITE_FILE):
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
            return int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
    return -1


@contextlib.contextmanager
def process(arguments: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, interrupted (then killed) when the block ends."""
    with log.open("ab") as output:
        child = subprocess.Popen(arguments, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_for_http(port: int, deadline_s: float) -> None:
    import urllib.request

    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"fleet serve did not answer on port {port}") from None
            time.sleep(0.5)


def one_size(gateways: int, arguments: argparse.Namespace, postgres_url: str | None = None) -> dict[str, Any]:
    """Run one size and return its figures (PostgreSQL at `postgres_url` if given, else SQLite)."""
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto not found")
    with tempfile.TemporaryDirectory(prefix="bmsgate-sizing-") as directory:
        root = Path(directory)
        data = root / "data"
        port, http = free_port(), free_port()
        config = root / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser {getpass.getuser()}\n"
            "max_queued_messages 100000\nlog_dest none\n",
            encoding="utf-8",
        )
        python = [sys.executable, "-m", "bmsgate"]
        broker_url = f"mqtt://127.0.0.1:{port}"
        with process([str(binary), "-c", str(config)], root / "mosquitto.log") as broker:
            time.sleep(0.5)
            serve = [
                *python,
                "fleet",
                "serve",
                "--data",
                str(data),
                "--broker",
                broker_url,
                "--http",
                f"127.0.0.1:{http}",
                "--ingest-workers",
                str(arguments.ingest_workers),
                *(["--postgres", postgres_url] if postgres_url else []),
            ]

            def samples() -> int:
                return stored_samples_postgres(postgres_url) if postgres_url else stored_samples(data)

            with process(serve, root / "serve.log") as server:
                wait_for_http(http, 180)
                total_s = arguments.warmup + arguments.duration + 5
                simulate = [
                    *python,
                    "fleet",
                    "simulate",
                    "--gateways",
                    str(gateways),
                    "--interval",
                    str(arguments.interval),
                    "--broker",
                    broker_url,
                    "--duration",
                    str(total_s),
                    "--faults",
                    "0.0005",
                    "--churn",
                    "0.0005",
                    "--processes",
                    str(max(1, gateways // 15_000 + (gateways % 15_000 > 0))),
                ]
                with process(simulate, root / "simulate.log") as simulator:
                    time.sleep(arguments.warmup)
                    start = {
                        "server": cpu_s(server.pid),
                        "broker": cpu_s(broker.pid),
                        "simulator": cpu_s(simulator.pid),
                        "database": database_cpu(arguments),
                        "samples": samples(),
                        "at": time.monotonic(),
                    }
                    time.sleep(arguments.duration)
                    end = {
                        "server": cpu_s(server.pid),
                        "broker": cpu_s(broker.pid),
                        "simulator": cpu_s(simulator.pid),
                        "database": database_cpu(arguments),
                        "samples": samples(),
                        "at": time.monotonic(),
                        "server_rss": rss_mb(server.pid),
                        "broker_rss": rss_mb(broker.pid),
                    }
                    simulator.wait(arguments.duration + 120)
        report = _last_json(root / "simulate.log")
        store = store_figures_postgres(postgres_url) if postgres_url else store_figures(data)
    window = end["at"] - start["at"]
    per_thousand = 1000 / gateways
    telemetry_rate = report.get("telemetry", 0) / max(report.get("seconds", 1.0), 1e-9)
    samples_per_s = (end["samples"] - start["samples"]) / window
    raw_per_day = store.raw_bytes_per_sample * samples_per_s * 86400
    minute_per_day = store.rollup_bytes_per_day_per_battery["samples_minute"] * store.batteries
    hour_per_day = store.rollup_bytes_per_day_per_battery["samples_hour"] * store.batteries
    disk_per_day = raw_per_day + minute_per_day + hour_per_day
    # The default retention keeps 14 days raw, 90 days per minute and the hourly rows ~10 years: a year in.
    after_a_year = raw_per_day * 14 + minute_per_day * 90 + hour_per_day * 365
    return {
        "gateways": gateways,
        "store": "postgresql" if postgres_url else "sqlite",
        "ingest_workers": arguments.ingest_workers,
        "load_average_before": arguments.load_before,
        "interval_s": arguments.interval,
        "window_s": round(window, 1),
        "telemetry_msg_s_sent": round(telemetry_rate, 1),
        "samples_per_s_stored": round(samples_per_s, 1),
        "raw_bytes_per_sample": round(store.raw_bytes_per_sample, 1),
        "raw_mb_per_day": round(raw_per_day / 1e6, 1),
        "minute_rollup_mb_per_day": round(minute_per_day / 1e6, 1),
        "hour_rollup_mb_per_day": round(hour_per_day / 1e6, 2),
        "store_gb_after_a_year": round((after_a_year + store.fixed_mb * 1e6) / 1e9, 1),
        "batteries": store.batteries,
        "fixed_store_mb": round(store.fixed_mb, 1),
        "tables_mb": store.tables_mb,
        "server_cpu_core": round((end["server"] - start["server"]) / window, 3),
        "server_rss_mb": round(end["server_rss"], 1),
        "broker_cpu_core": round((end["broker"] - start["broker"]) / window, 3),
        "broker_rss_mb": round(end["broker_rss"], 1),
        "simulator_cpu_core": round((end["simulator"] - start["simulator"]) / window, 3),
        "postgres_cpu_core": round((end["database"] - start["database"]) / window, 3) if postgres_url else None,
        "disk_mb_per_day": round(disk_per_day / 1e6, 1),
        "disk_mb_per_day_per_1000": round(disk_per_day / 1e6 * per_thousand, 1),
        "server_cpu_per_1000": round((end["server"] - start["server"]) / window * per_thousand, 4),
        "simulator_report": {key: report.get(key) for key in ("messages", "telemetry", "acked", "connect_failures")},
    }


def _last_json(log: Path) -> dict[str, Any]:
    for raw in reversed(log.read_text(errors="replace").splitlines()):
        line = raw.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                answer = json.loads(line)
                if isinstance(answer, dict):
                    return answer
    return {}


@contextlib.contextmanager
def _postgres(arguments: argparse.Namespace) -> Iterator[Any]:
    """A function giving each size its database: None (SQLite), the given URL, or a new one on a throwaway cluster.

    The cluster's postmaster pid goes to ``arguments.postgres_pid`` (its CPU is read with its backends').
    """
    arguments.postgres_pid = None
    if arguments.postgres is None:
        yield lambda: None
        return
    if arguments.postgres != "auto":
        yield lambda: arguments.postgres
        return
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.fleet.server.conftest import PostgresCluster, _postgres_binaries

    binaries = _postgres_binaries()
    if binaries is None:
        raise SystemExit("PostgreSQL server binaries not installed")
    directory = Path(tempfile.mkdtemp(prefix="bmsgate-sizing-pg-"))
    cluster = PostgresCluster(binaries, directory)
    cluster.durable_commits = True  # as a production server: synchronous_commit on
    cluster.start()
    assert cluster.process is not None
    arguments.postgres_pid = cluster.process.pid
    try:
        yield cluster.new_database
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def database_cpu(arguments: argparse.Namespace) -> float:
    """CPU seconds of the throwaway PostgreSQL (its postmaster and every backend), 0 without one."""
    return cpu_s(arguments.postgres_pid) if arguments.postgres_pid else 0.0


def main() -> None:
    """Run every size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=120.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=40.0, help="s before the window (connects, first reads)")
    parser.add_argument("--postgres", metavar="URL|auto", help="store in PostgreSQL (auto: a throwaway cluster)")
    parser.add_argument("--ingest-workers", type=int, default=1, help="fleet serve --ingest-workers N")
    arguments = parser.parse_args()
    rows = []
    with _postgres(arguments) as new_database:
        for gateways in arguments.gateways:
            arguments.load_before = round(os.getloadavg()[0], 1)
            figures = one_size(gateways, arguments, new_database())
            print(json.dumps(figures), flush=True)
            rows.append(figures)
    print(
        "\n| gateways | telemetry msg/s | stored samples/s | server CPU (cores) | server RSS | Mosquitto CPU | "
        "Mosquitto RSS | disk/day | disk/day per 1,000 | store after a year (default retention) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['gateways']:,} | {row['telemetry_msg_s_sent']:.0f} | {row['samples_per_s_stored']:.0f} | "
            f"{row['server_cpu_core']:.2f} | {row['server_rss_mb']:.0f} MB | {row['broker_cpu_core']:.3f} | "
            f"{row['broker_rss_mb']:.0f} MB | {row['disk_mb_per_day']:,.0f} MB | "
            f"{row['disk_mb_per_day_per_1000']:,.0f} MB | {row['store_gb_after_a_year']:,.1f} GB |"
        )


if __name__ == "__main__":
    main()
