"""50,000 simulated gateways on a 3-node NATS cluster: connections, memory, what the tier carries, loss.

One process cannot hold 50,000 sockets here (20,000 open files per process, a hard limit), so the fleet is
``bmsgate fleet simulate --processes 3 --broker <node 1>,<node 2>,<node 3>``: each simulator process holds
its third of the gateways on its own NATS node (MQTT 3.1.1, QoS 1, retained state and availability, a
last will each), telemetry every ``--interval`` s. With ``--ingest-workers N`` (N ≥ 1) the fleet server's
ingest reads the cluster's ``$MQTT_msgs`` through its JetStream consumer into a throwaway PostgreSQL 15,
as ``fleet serve --cluster ... --postgres ... --ingest-workers N`` runs it (``IngestWorkers`` over a
``JetStreamSource``); ``--ingest-workers 0`` measures the broker tier alone.

Printed, from the nodes' own monitoring (``/varz``, every ``--sample`` s) and the simulator's report:

- connect time: from the simulator's start until the cluster holds every gateway's connection, and the
  simulator's own ``connect_s`` (its processes' slowest first-connection phase);
- connections held per node, and each node's RSS with them: per 1,000 connections (RSS at the end of the
  connect phase minus RSS before, over the connections);
- msg/s the simulator wrote and the cluster PUBACKed over the run, and what was still unacknowledged
  (``unconfirmed``) when the run ended; the CPU of the three nodes and of the simulators;
- with ingest: the sustained rate into PostgreSQL, publish → commit latency, and loss (telemetry messages
  acknowledged by the cluster that are not in PostgreSQL after ``--drain`` s; a backlog still in
  JetStream is counted as "not yet stored", not as lost: the consumer keeps it).

Usage: python benchmarks/fleet_50k.py [--gateways 50000] [--interval 10] [--duration 60] [--processes 3]
       [--ingest-workers 0|N] [--drain 120]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fleet.server.conftest import PostgresCluster, _postgres_binaries

from benchmarks.fleet_cluster import Commits, cpu_seconds, percentile, prime_mqtt_streams
from bmsgate.fleet.server.ingest import IngestSettings, IngestWorkers
from bmsgate.fleet.server.nats_cluster import NatsCluster
from bmsgate.fleet.server.nats_ingest import JetStreamSource
from bmsgate.fleet.server.store import StoreSettings, open_store


def _varz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=5) as answer:
            found = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class _Sampler:
    """Every node's connections and RSS every ``interval`` s (a thread: the event loop may be busy)."""

    def __init__(self, cluster: NatsCluster, interval: float) -> None:
        self.cluster = cluster
        self.interval = interval
        self.samples: list[tuple[float, list[int], list[float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.pids = cluster.pids()

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            connections = [int(_varz(node.monitor_port).get("connections", 0)) for node in self.cluster.nodes]
            rss = [_rss_mib(pid) for pid in self.pids]
            self.samples.append((time.monotonic(), connections, rss))
            self._stop.wait(self.interval)

    def first_time_with(self, total: int) -> float | None:
        for at, connections, _ in self.samples:
            if sum(connections) >= total:
                return at
        return None

    def at_or_after(self, moment: float) -> tuple[list[int], list[float]]:
        for at, connections, rss in self.samples:
            if at >= moment:
                return connections, rss
        return self.samples[-1][1], self.samples[-1][2]


async def _stored_telemetry(store: Any) -> int:
    rows = await store.extension_query("SELECT count(*) FROM (SELECT DISTINCT gateway, at FROM samples) AS t")
    return int(rows[0][0])


def _phase_rates(lines: list[str], processes: int) -> None:
    """The first simulator process's rates once it publishes (its per-second lines start after its connects)."""
    points = []
    for line in lines:
        if line.startswith("{"):
            continue
        fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
        with contextlib.suppress(KeyError, ValueError, IndexError):
            points.append((float(line.split()[0].rstrip("s")), int(fields["telemetry"]), int(fields["acked"])))
    if len(points) < 2:
        return
    (t0, telemetry0, acked0), (t1, telemetry1, acked1) = points[0], points[-1]
    span = max(t1 - t0, 1e-9)
    print(
        f"simulator process 1 of {processes} while publishing ({span:.0f} s): "
        f"{(telemetry1 - telemetry0) / span:.0f} telemetry msg/s written, {(acked1 - acked0) / span:.0f} PUBACKs/s "
        f"(x{processes} for the fleet if the others did alike)"
    )


def simulate_command(arguments: argparse.Namespace, brokers: list[str], processes: int) -> list[str]:
    """`bmsgate fleet simulate` for this run: `processes` processes, process k on broker k mod n."""
    return [
        sys.executable,
        "-m",
        "bmsgate",
        "fleet",
        "simulate",
        "--gateways",
        str(arguments.gateways),
        "--interval",
        str(arguments.interval),
        "--duration",
        str(arguments.duration),
        "--processes",
        str(processes),
        "--broker",
        ",".join(brokers),
        "--faults",
        "0.0005",
    ]


async def _run(arguments: argparse.Namespace, cluster: NatsCluster, postgres_url: str | None) -> None:
    store = None
    workers = None
    commits = Commits()
    task = None
    if postgres_url is not None:
        settings = StoreSettings(postgres_url=postgres_url)
        store = await open_store(settings)  # migrated before the workers start
        await prime_mqtt_streams(cluster.nodes[0].mqtt_url)
        source = JetStreamSource(servers=tuple(f"nats://127.0.0.1:{node.client_port}" for node in cluster.nodes))
        workers = IngestWorkers(
            settings, source, workers=arguments.ingest_workers, settings=IngestSettings(), observers=[commits]
        )
        task = asyncio.create_task(workers.run())
        async with asyncio.timeout(60):
            await workers.connected.wait()
    pids = cluster.pids()
    nats_cpu_before = sum(cpu_seconds(pid) for pid in pids)
    baseline_connections = sum(int(_varz(node.monitor_port).get("connections", 0)) for node in cluster.nodes)
    rss_before = [_rss_mib(pid) for pid in pids]
    lines: list[str] = []
    with _Sampler(cluster, arguments.sample) as sampler:
        started = time.monotonic()
        simulator = await asyncio.create_subprocess_exec(
            *simulate_command(arguments, cluster.mqtt_urls, arguments.processes), stdout=asyncio.subprocess.PIPE
        )
        assert simulator.stdout is not None
        async for raw in simulator.stdout:
            line = raw.decode().strip()
            lines.append(line)
            if arguments.verbose or len(lines) % 10 == 1:
                print(f"[simulator] {line}", flush=True)
        await simulator.wait()
        nats_cpu = sum(cpu_seconds(pid) for pid in pids) - nats_cpu_before
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    _phase_rates(lines, arguments.processes)
    all_connected = sampler.first_time_with(baseline_connections + arguments.gateways)
    peak_at, peak_connections, peak_rss = max(sampler.samples, key=lambda sample: sum(sample[1]))
    peak = sum(peak_connections)
    connections_then, rss_then = (
        sampler.at_or_after(all_connected) if all_connected is not None else (peak_connections, peak_rss)
    )
    print(f"(most connections at {peak_at - started:.0f} s: {peak_connections})")
    timeline = [
        f"{at - started:.0f}s:{sum(connections)}"
        for at, connections, _ in sampler.samples[:: max(1, len(sampler.samples) // 40)]
    ]
    print("connections held over time: " + " ".join(timeline))
    stored = 0
    drained_s = None
    if store is not None:
        deadline = time.monotonic() + arguments.drain
        drain_start = time.monotonic()
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                stored = await _stored_telemetry(store)
            if stored >= summary.get("telemetry", 0):
                drained_s = time.monotonic() - drain_start
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(1.5)  # the last batches' hand-over to this process
    worker_cpu = sum(cpu_seconds(pid) for pid in workers.pids.values()) if workers is not None else 0.0
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if store is not None:
        await store.close()
    _report(
        arguments,
        summary=summary,
        started=started,
        all_connected=all_connected,
        connections=connections_then,
        peak=peak,
        rss_before=rss_before,
        rss_then=rss_then,
        nats_cpu=nats_cpu,
        ingest=(stored, drained_s, commits, worker_cpu) if store is not None else None,
    )


def _report(
    arguments: argparse.Namespace,
    *,
    summary: dict[str, Any],
    started: float,
    all_connected: float | None,
    connections: list[int],
    peak: int,
    rss_before: list[float],
    rss_then: list[float],
    nats_cpu: float,
    ingest: tuple[int, float | None, Commits, float] | None,
) -> None:
    load = os.getloadavg()
    print(
        f"fleet: {arguments.gateways} gateways, interval {arguments.interval} s, {arguments.processes} simulator "
        f"processes, one NATS node each; run {arguments.duration} s; load average now {load[0]:.1f}"
    )
    held = "not all connected" if all_connected is None else f"{all_connected - started:.1f} s"
    print(
        f"connect: the cluster held every gateway after {held} (sampled every {arguments.sample} s; "
        f"includes the simulators' start and templates); simulator connect_s {summary.get('connect_s', 0):.1f} s, "
        f"connect failures {summary.get('connect_failures')}, connects {summary.get('connects')}"
    )
    print(f"connections per node then (all connected, else at the most): {connections} (peak total {peak})")
    for index, (before, then) in enumerate(zip(rss_before, rss_then, strict=True)):
        count = connections[index] if index < len(connections) else 0
        per = (then - before) / max(count / 1000, 1e-9)
        print(
            f"node n{index + 1}: RSS {before:.0f} -> {then:.0f} MiB with {count} connections = {per:.1f} MiB "
            "per 1,000 connections"
        )
    run_s = max(arguments.duration, 1e-9)
    messages, acked = summary.get("messages", 0), summary.get("acked", 0)
    print(
        f"simulator: {messages} messages ({summary.get('telemetry', 0)} telemetry, {summary.get('events', 0)} "
        f"events) = {summary.get('telemetry', 0) / run_s:.0f} telemetry msg/s written; {acked} PUBACKed "
        f"({acked / run_s:.0f} msg/s over the run), unconfirmed at the end {summary.get('unconfirmed', 0)}; "
        f"simulator CPU {summary.get('cpu_s', 0):.1f} s"
    )
    print(
        f"NATS CPU (3 nodes) over the run: {nats_cpu:.1f} s = {nats_cpu / run_s:.2f} cores; "
        f"{nats_cpu / max(acked, 1) * 1e6:.0f} us per PUBACKed message (connects included)"
    )
    if ingest is not None:
        stored, drained_s, commits, worker_cpu = ingest
        telemetry = summary.get("telemetry", 0)
        sustained = commits.messages / max((commits.last or 0) - (commits.first or 0), 1e-9)
        drained = f"all stored {drained_s:.0f} s after the run" if drained_s is not None else "NOT all stored"
        print(
            f"ingest ({arguments.ingest_workers} workers, PostgreSQL): {stored} of {telemetry} telemetry messages "
            f"stored ({drained}, waited at most {arguments.drain} s); sustained {sustained:.0f} msg/s; "
            f"missing {max(telemetry - stored, 0)} (acknowledged backlog still in JetStream or lost: see above)"
        )
        print(
            f"publish -> commit: p50 {percentile(commits.latencies, 0.5):.2f} s, "
            f"p99 {percentile(commits.latencies, 0.99):.2f} s; worker CPU {worker_cpu:.1f} s (their last run)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateways", type=int, default=50_000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--ingest-workers", type=int, default=0, help="0: the broker tier alone")
    parser.add_argument("--drain", type=float, default=120.0, help="s to wait for ingest after the run")
    parser.add_argument("--sample", type=float, default=2.0, help="s between the nodes' /varz samples")
    parser.add_argument("--verbose", action="store_true", help="every simulator line")
    arguments = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bmsgate-bench-50k-"))
    cluster = None
    postgres = None
    pg_directory = Path(tempfile.mkdtemp(prefix="bmsgate-bench-50k-pg-"))  # its own: chowned to postgres
    try:
        postgres_url = None
        if arguments.ingest_workers > 0:
            binaries = _postgres_binaries()
            if binaries is None:
                sys.exit("PostgreSQL server binaries not installed")
            postgres = PostgresCluster(binaries, pg_directory)
            postgres.start()
            postgres_url = postgres.new_database()
        # Its ports are picked (not bound) here: after PostgreSQL is listening, so the two cannot pick one port.
        cluster = NatsCluster(directory / "nats")
        cluster.start()
        asyncio.run(_run(arguments, cluster, postgres_url))
    finally:
        if cluster is not None:
            cluster.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(pg_directory, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
