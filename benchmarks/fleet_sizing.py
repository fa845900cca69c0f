"""Rows of the sizing table (docs/fleet-scale.md): the default stack under a simulated fleet, per 1,000 gateways.

For each ``--gateways`` size: a plain Mosquitto on a free loopback port (anonymous, as ``fleet serve
--broker`` uses an existing broker), ``bmsgate fleet serve --data DIR --broker ...`` (SQLite store, ingest in
the server process, alarms, API) and ``bmsgate fleet simulate --gateways N --interval S`` against it. After
``--warmup`` s (connecting, retained states, the overview's first read) it measures for ``--duration`` s:

- telemetry msg/s the simulator sent, and the samples the store gained (read with sqlite3 afterwards):
  what reached the store;
- server CPU (user + system of ``fleet serve`` and any child, as a share of one core) and its RSS at the end;
- Mosquitto CPU and RSS;
- disk: bytes per stored sample of the tables that grow with time (raw samples, their index, the minute and
  hour rollups, events), from the stopped store's pages (``dbstat``), times the samples stored per second:
  MB per day, and per day per 1,000 gateways (the retention settings decide how many days are kept);

and prints one table row per size (and a JSON line with every figure). Everything runs on this machine,
so the simulator's own CPU (printed too) is taken from the same cores.

Usage: python benchmarks/fleet_sizing.py [--gateways 1000 2000 5000] [--interval 10] [--duration 120]
       [--warmup 40]
"""

from __future__ import annotations

import argparse
import contextlib
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


_GROWING: Final = ("samples", "samples_at", "samples_minute", "samples_hour", "events")
"""Tables (and the sample index) that grow with time; the others hold one row per gateway or alarm."""


def store_bytes(data: Path) -> tuple[dict[str, int], int]:
    """Bytes per table and index of the stopped server's SQLite store (``dbstat``), and its raw samples.

    The file sizes say little during a run (the WAL grows to its high-water mark; a checkpoint lags behind
    readers), so the store is measured once the server has stopped, from its pages.
    """
    for database in data.rglob(SQLITE_FILE):
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            tables = {
                name: int(size) for name, size in db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
            }
            return tables, int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
    return {}, 0


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


def one_size(gateways: int, arguments: argparse.Namespace) -> dict[str, Any]:
    """Run one size and return its figures."""
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
            ]
            with process(serve, root / "serve.log") as server:
                wait_for_http(http, 60)
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
                        "samples": stored_samples(data),
                        "at": time.monotonic(),
                    }
                    time.sleep(arguments.duration)
                    end = {
                        "server": cpu_s(server.pid),
                        "broker": cpu_s(broker.pid),
                        "simulator": cpu_s(simulator.pid),
                        "samples": stored_samples(data),
                        "at": time.monotonic(),
                        "server_rss": rss_mb(server.pid),
                        "broker_rss": rss_mb(broker.pid),
                    }
                    simulator.wait(arguments.duration + 120)
        report = _last_json(root / "simulate.log")
        tables, samples = store_bytes(data)
    window = end["at"] - start["at"]
    per_thousand = 1000 / gateways
    telemetry_rate = report.get("telemetry", 0) / max(report.get("seconds", 1.0), 1e-9)
    samples_per_s = (end["samples"] - start["samples"]) / window
    growing = sum(size for name, size in tables.items() if name in _GROWING)
    bytes_per_sample = growing / max(samples, 1)
    disk_per_day = bytes_per_sample * samples_per_s * 86400
    return {
        "gateways": gateways,
        "interval_s": arguments.interval,
        "window_s": round(window, 1),
        "telemetry_msg_s_sent": round(telemetry_rate, 1),
        "samples_per_s_stored": round(samples_per_s, 1),
        "bytes_per_sample": round(bytes_per_sample, 1),
        "fixed_store_mb": round(sum(size for name, size in tables.items() if name not in _GROWING) / 1e6, 1),
        "tables_mb": {
            name: round(size / 1e6, 2) for name, size in sorted(tables.items(), key=lambda item: -item[1])[:8]
        },
        "server_cpu_core": round((end["server"] - start["server"]) / window, 3),
        "server_rss_mb": round(end["server_rss"], 1),
        "broker_cpu_core": round((end["broker"] - start["broker"]) / window, 3),
        "broker_rss_mb": round(end["broker_rss"], 1),
        "simulator_cpu_core": round((end["simulator"] - start["simulator"]) / window, 3),
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


def main() -> None:
    """Run every size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=120.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=40.0, help="s before the window (connects, first reads)")
    arguments = parser.parse_args()
    rows = []
    for gateways in arguments.gateways:
        figures = one_size(gateways, arguments)
        print(json.dumps(figures), flush=True)
        rows.append(figures)
    print(
        "\n| gateways | telemetry msg/s | stored samples/s | server CPU (cores) | server RSS | Mosquitto CPU | "
        "Mosquitto RSS | disk/day | disk/day per 1,000 | server CPU per 1,000 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['gateways']:,} | {row['telemetry_msg_s_sent']:.0f} | {row['samples_per_s_stored']:.0f} | "
            f"{row['server_cpu_core']:.2f} | {row['server_rss_mb']:.0f} MB | {row['broker_cpu_core']:.3f} | "
            f"{row['broker_rss_mb']:.0f} MB | {row['disk_mb_per_day']:,.0f} MB | "
            f"{row['disk_mb_per_day_per_1000']:,.0f} MB | {row['server_cpu_per_1000']:.3f} |"
        )


if __name__ == "__main__":
    main()
