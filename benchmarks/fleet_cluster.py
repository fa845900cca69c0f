"""Cluster-mode ingest throughput: gateways → 3-node NATS cluster (MQTT) → N ingest workers (JetStream) → PostgreSQL.

Starts a 3-node NATS cluster on loopback (:class:`NatsCluster`), a throwaway PostgreSQL 15 (as the tests do),
``--workers`` ingest worker processes on the one shared JetStream consumer (:class:`IngestWorkers` with a
:class:`JetStreamSource`, as ``fleet serve --cluster ... --ingest-workers N`` runs them) and one load
generator per node (``benchmarks/fleet_ingest.py generate``: raw MQTT 3.1.1 gateways, ~1 KB QoS 1 telemetry),
``--gateways`` between them at ``--rate`` msg/s in all for ``--duration`` s. Then it waits until every
acknowledged message is in PostgreSQL and prints:

- the publish rate reached and the sustained ingest rate (messages committed / time from first to last commit);
- loss: messages the broker acknowledged (PUBACK) that are not rows in PostgreSQL (distinct, so a
  redelivered message stored twice counts once);
- publish → commit latency p50 / p99 / max (taken when the committed batch is back in the server process,
  as the live feed sees it);
- the CPU of the workers, the NATS nodes and the generators per message.

Usage: python benchmarks/fleet_cluster.py [--gateways 300] [--rate 2000] [--duration 20] [--workers 2]
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
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fleet.server.conftest import PostgresCluster, _postgres_binaries

from bmsgate.fleet.server.ingest import IngestSettings, IngestWorkers
from bmsgate.fleet.server.nats_cluster import NatsCluster
from bmsgate.fleet.server.nats_ingest import JetStreamSource
from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.repository import IngestBatch, WriteResult
from bmsgate.mqtt import client as mqtt
from bmsgate.mqtt.settings import BrokerSettings

_GENERATOR = Path(__file__).resolve().parent / "fleet_ingest.py"


class Commits:
    """Publish → commit of each telemetry message, as committed batches come back to the server process."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.first: float | None = None
        self.last: float | None = None
        self.messages = 0

    def observe(self, batch: IngestBatch, result: WriteResult) -> None:
        now = time.time()
        if batch.telemetry:
            self.first = self.first or now
            self.last = now
            self.messages += len(batch.telemetry)
            self.latencies.extend(now - message.at for message, _ in batch.telemetry)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def prime_mqtt_streams(url: str) -> None:
    """One MQTT session first: NATS makes its MQTT streams then (the durable consumer needs ``$MQTT_msgs``)."""
    settings = BrokerSettings.model_validate({"url": url, "client_id": "bench-prime"})
    for _ in range(20):
        with contextlib.suppress(Exception):
            async with mqtt.connect(settings, will_topic="bench/prime", will_payload="gone") as session:
                await session.publish("bench/prime", b"1", retain=False, qos=1)
            return
    raise SystemExit("the NATS cluster does not take MQTT sessions")


async def stored_telemetry(store: Any) -> int:
    rows = await store.extension_query("SELECT count(*) FROM samples WHERE gateway LIKE ?", ("bench-%",))
    return int(rows[0][0])


async def _run(arguments: argparse.Namespace, cluster: NatsCluster, postgres_url: str, directory: Path) -> None:
    settings = StoreSettings(postgres_url=postgres_url)
    store = await open_store(settings)  # migrated before the workers start
    await prime_mqtt_streams(cluster.nodes[0].mqtt_url)
    commits = Commits()
    source = JetStreamSource(
        servers=tuple(f"nats://127.0.0.1:{node.client_port}" for node in cluster.nodes),
        fetch_batch=arguments.fetch_batch,
        fetch_wait_s=arguments.fetch_wait,
    )
    workers = IngestWorkers(
        settings,
        source,
        workers=arguments.workers,
        settings=IngestSettings(max_batch=arguments.batch, max_delay_s=arguments.delay),
        observers=[commits],
    )
    task = asyncio.create_task(workers.run())
    try:
        async with asyncio.timeout(60):
            await workers.connected.wait()
        nats_pids = cluster.pids()
        nats_before = sum(cpu_seconds(pid) for pid in nats_pids)
        generators = []
        per = arguments.gateways // len(cluster.nodes)
        for index, node in enumerate(cluster.nodes):
            stats = directory / f"gen-{index}.json"
            command = [
                sys.executable,
                str(_GENERATOR),
                "generate",
                "--broker",
                node.mqtt_url,
                "--gateways",
                str(per),
                "--offset",
                str(index * per),
                "--rate",
                str(arguments.rate / len(cluster.nodes)),
                "--duration",
                str(arguments.duration),
                "--stats",
                str(stats),
            ]
            generators.append((stats, await asyncio.create_subprocess_exec(*command)))
        for _, process in generators:
            await process.wait()
        finals = [json.loads(stats.read_text()) for stats, _ in generators]
        acked = sum(final["sent"] for final in finals)
        written = sum(final.get("written", final["sent"]) for final in finals)
        start = min(final["start"] for final in finals)
        end = max(final["end"] for final in finals)
        deadline = time.monotonic() + 120
        stored = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                stored = await stored_telemetry(store)
            if stored >= acked:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.5)  # the last batches' hand-over to this process
        nats_cpu = sum(cpu_seconds(pid) for pid in nats_pids) - nats_before
        worker_cpu = sum(cpu_seconds(pid) for pid in workers.pids.values())
        generator_cpu = sum(final.get("cpu_s", 0.0) for final in finals)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
    sustained = commits.messages / max((commits.last or 0) - (commits.first or 0), 1e-9)
    print(
        f"cluster: 3 NATS nodes, {arguments.workers} ingest worker(s) on one JetStream consumer, PostgreSQL 15; "
        f"{arguments.gateways} gateways; fetch {arguments.fetch_batch} / {arguments.fetch_wait} s, "
        f"batches of {arguments.batch} / {arguments.delay} s"
    )
    print(f"published: {written} msgs in {end - start:.1f} s = {written / (end - start):.0f} msg/s, {acked} PUBACKed")
    print(
        f"stored: {stored} distinct messages in PostgreSQL; lost (acknowledged, not stored): {max(acked - stored, 0)}; "
        f"sustained ingest {sustained:.0f} msg/s (committed batches seen by the server process: {commits.messages})"
    )
    latencies = commits.latencies
    print(
        f"publish -> commit latency: p50 {percentile(latencies, 0.5):.3f} s, "
        f"p99 {percentile(latencies, 0.99):.3f} s, max {max(latencies, default=float('nan')):.3f} s"
    )
    for index, report in sorted(workers.reports.items()):
        p50, p99 = report.get("latency_p50_s"), report.get("latency_p99_s")
        if p50 is not None and p99 is not None:
            print(
                f"worker {index}: sampling time -> commit in the worker (its last 10,000): "
                f"p50 {p50:.3f} s, p99 {p99:.3f} s"
            )
    counters = workers.counters
    print(
        f"workers: rejected {dict(counters.rejected)}, store retries {counters.store_failures}, "
        f"backpressure waits {counters.backpressure_waits}, duplicates {counters.samples_duplicate}"
    )
    per_message = 1e6 / max(acked, 1)
    print(
        f"CPU per message: workers {worker_cpu * per_message:.0f} us (their last run), NATS (3 nodes) "
        f"{nats_cpu * per_message:.0f} us, generators {generator_cpu * per_message:.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateways", type=int, default=300)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--fetch-batch", type=int, default=JetStreamSource(servers=()).fetch_batch)
    parser.add_argument("--fetch-wait", type=float, default=JetStreamSource(servers=()).fetch_wait_s)
    arguments = parser.parse_args()
    binaries = _postgres_binaries()
    if binaries is None:
        sys.exit("PostgreSQL server binaries not installed")
    directory = Path(tempfile.mkdtemp(prefix="bmsgate-bench-cluster-"))
    pg_directory = Path(tempfile.mkdtemp(prefix="bmsgate-bench-pg-"))
    postgres = PostgresCluster(binaries, pg_directory)
    cluster = NatsCluster(directory / "nats")
    try:
        postgres.start()
        cluster.start()
        asyncio.run(_run(arguments, cluster, postgres.new_database(), directory))
    finally:
        cluster.stop()
        postgres.stop()
        shutil.rmtree(pg_directory, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
