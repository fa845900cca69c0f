"""50,000 simulated gateways on a Mosquitto bridge tier: edges bridging to one central Mosquitto, ingest into SQLite.

One process cannot hold 50,000 sockets here (20,000 open files per process, a hard limit), so the gateways
are spread over ``--edges`` edge Mosquitto processes (``max_connections -1``), each holding its share and
bridging the fleet topics to one central Mosquitto over one MQTT 3.1.1 connection (QoS 1, ``cleansession
false``): the gateway channels out (edge → central), ``desired`` and ``command`` in (central → edge), so no
topic is bridged both ways and nothing loops or fans back out to the other edges. The ingest subscribes to the
central broker exactly as ``benchmarks/fleet_ingest.py``'s ``serve`` role does (that role is started, into a
throwaway SQLite store); the fleet is ``bmsgate fleet simulate --processes <edges> --broker <e1>,<e2>,...``
(process k on edge k).

Printed: connect time (until the edges hold every gateway: their open sockets, sampled every ``--sample`` s),
connections per edge, each edge's RSS per 1,000 connections, msg/s written and PUBACKed (by the edges: an edge
acknowledges on receipt), msg/s committed, publish → commit p50/p99, loss (distinct ``(gateway, at)`` telemetry
rows in the store against the telemetry the edges acknowledged), CPU per message of each process kind, and the
load average before and after.

Usage: python benchmarks/fleet_50k_bridged.py [--gateways 50000] [--interval 10] [--duration 60] [--edges 3]
       [--drain 120]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet_50k import _phase_rates, _rss_mib, simulate_command
from benchmarks.fleet_cluster import cpu_seconds, percentile
from benchmarks.fleet_ingest import _migrate
from bmsgate.fleet.protocol import GATEWAY_CHANNELS, Channel
from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.mqtt.broker import find_mosquitto, free_port

_INGEST_SCRIPT = Path(__file__).resolve().parent / "fleet_ingest.py"
_BRIDGE_INFLIGHT = 1000
"""QoS 1 messages an edge's bridge has unacknowledged by the central broker (a few tens of ms at 1,700 msg/s)."""
_QUEUE = 1_000_000
"""Messages a client (the bridge, or the ingest on the central broker) may have queued: minutes of backlog."""


def _broker_config(port: int, directory: Path, bridge_to: int | None, name: str) -> Path:
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "user root",
        "max_connections -1",
        f"max_queued_messages {_QUEUE}",
        f"persistence_location {directory}/",
        "persistence true",
        "autosave_interval 30",
    ]
    if bridge_to is None:
        lines.append("max_inflight_messages 20000")  # the ingest acknowledges after its commit: a batch or two
    else:
        lines += [
            f"max_inflight_messages {_BRIDGE_INFLIGHT}",
            f"connection {name}",
            f"address 127.0.0.1:{bridge_to}",
            f"remote_clientid bridge-{name}",
            "bridge_protocol_version mqttv311",
            "cleansession false",  # the central broker keeps the bridge's session (commands) across a restart
            "try_private true",
            "notifications false",
            "restart_timeout 1 10",
            "keepalive_interval 60",
        ]
        lines += [f"topic fleet/v1/+/{channel} out 1" for channel in sorted(GATEWAY_CHANNELS)]
        lines += [f"topic fleet/v1/+/{channel} in 1" for channel in (Channel.DESIRED, Channel.COMMAND)]
    config = directory / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


class _Broker:
    """One Mosquitto process of the tier (its own directory, config, log and persistence file)."""

    def __init__(self, directory: Path, name: str, bridge_to: int | None) -> None:
        binary = find_mosquitto()
        if binary is None:
            sys.exit("mosquitto is not installed")
        directory.mkdir(parents=True)
        self.name = name
        self.port = free_port()
        self.log = directory / "mosquitto.log"
        self._command = [str(binary), "-c", str(_broker_config(self.port, directory, bridge_to, name))]
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(self._command, stdout=log, stderr=log)

    def crash_and_restart(self, down_s: float) -> None:
        """SIGKILL it (no persistence write, no wills), and start it again on its files after ``down_s`` s."""
        self.process.kill()
        self.process.wait()
        time.sleep(down_s)
        self.process = self._start()

    @property
    def url(self) -> str:
        """Its MQTT URL."""
        return f"mqtt://127.0.0.1:{self.port}"

    def sockets(self) -> int:
        """Open sockets (gateways, the listener, the bridge): cheap to read at 17,000 connections."""
        count = 0
        with contextlib.suppress(OSError):
            for entry in os.scandir(f"/proc/{self.process.pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(entry.path).startswith("socket:"):
                        count += 1
        return count

    def stop(self) -> None:
        """Terminate it (its own PID only) and wait."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _Sampler:
    """Every edge's gateway connections and RSS every ``interval`` s (a thread: the loop may be busy)."""

    def __init__(self, edges: list[_Broker], interval: float) -> None:
        self.edges = edges
        self.interval = interval
        self.baseline = [edge.sockets() for edge in edges]
        self.samples: list[tuple[float, list[int], list[float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            connections = [edge.sockets() - base for edge, base in zip(self.edges, self.baseline, strict=True)]
            rss = [_rss_mib(edge.process.pid) for edge in self.edges]
            self.samples.append((time.monotonic(), connections, rss))
            self._stop.wait(self.interval)

    def first_with(self, total: int) -> tuple[float, list[int], list[float]] | None:
        for sample in self.samples:
            if sum(sample[1]) >= total:
                return sample
        return None


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _start_ingest(central: _Broker, data: Path, stats: Path) -> subprocess.Popen[bytes]:
    asyncio.run(_migrate(data))
    ingest = subprocess.Popen(
        [
            sys.executable,
            str(_INGEST_SCRIPT),
            "serve",
            "--broker",
            central.url,
            "--data",
            str(data),
            "--stats",
            str(stats),
        ]
    )
    deadline = time.monotonic() + 30
    while not _read(stats).get("connected"):
        if time.monotonic() > deadline or ingest.poll() is not None:
            sys.exit("the ingest did not connect to the central broker")
        time.sleep(0.1)
    return ingest


def _bridges_up(edges: list[_Broker], timeout: float) -> None:
    """Wait until every edge logged its bridge's CONNACK (Mosquitto logs "Connecting bridge" then nothing more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A bridge holds one socket to the central broker besides the edge's listener.
        if all(edge.sockets() >= 2 for edge in edges):
            return
        time.sleep(0.1)
    sys.exit("the edges' bridges did not connect")


def _simulate(arguments: argparse.Namespace, edges: list[_Broker]) -> tuple[dict[str, Any], list[str], float]:
    command = simulate_command(arguments, [edge.url for edge in edges], len(edges))
    started = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as simulator:
        assert simulator.stdout is not None
        for raw in simulator.stdout:
            line = raw.strip()
            lines.append(line)
            if arguments.verbose or len(lines) % 10 == 1:
                print(f"[simulator] {line}", flush=True)
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return summary, lines, started


async def _distinct_telemetry(data: Path) -> int:
    store = await open_store(StoreSettings(data_dir=data))
    try:
        rows = await store.extension_query("SELECT count(*) FROM (SELECT DISTINCT gateway, at FROM samples) AS t")
    finally:
        await store.close()
    return int(rows[0][0])


def _run(arguments: argparse.Namespace, directory: Path, brokers: list[_Broker]) -> None:
    central = _Broker(directory / "central", "central", None)
    brokers.append(central)
    time.sleep(0.3)
    for index in range(arguments.edges):
        brokers.append(_Broker(directory / f"edge{index + 1}", f"edge{index + 1}", central.port))
    edges = brokers[1:]
    _bridges_up(edges, 20)
    data, stats = directory / "data", directory / "ingest.json"
    ingest = _start_ingest(central, data, stats)
    try:
        load_before = os.getloadavg()
        cpu_before = {broker.name: cpu_seconds(broker.process.pid) for broker in brokers}
        ingest_cpu_before = _read(stats).get("cpu_s", 0.0)
        rss_before = [_rss_mib(edge.process.pid) for edge in edges]
        crash = None
        if arguments.crash_edge is not None:
            # edge1's CPU before the crash is not counted after it (a new process).
            crash = threading.Timer(arguments.crash_edge, edges[0].crash_and_restart, args=(arguments.crash_down,))
            crash.start()
        with _Sampler(edges, arguments.sample) as sampler:
            summary, lines, started = _simulate(arguments, edges)
        if crash is not None:
            crash.join()
        cpu_run = {broker.name: cpu_seconds(broker.process.pid) - cpu_before[broker.name] for broker in brokers}
        drain_start = time.monotonic()
        drained_s = None
        while time.monotonic() < drain_start + arguments.drain:
            if _read(stats).get("messages", 0) >= summary.get("telemetry", 0):
                drained_s = time.monotonic() - drain_start
                break
            time.sleep(0.5)
        time.sleep(1.0)  # the last batch's commit
        cpu_all = {broker.name: cpu_seconds(broker.process.pid) - cpu_before[broker.name] for broker in brokers}
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(60)
    final = _read(stats)
    stored = asyncio.run(_distinct_telemetry(data))
    load_after = os.getloadavg()
    _phase_rates(lines, arguments.edges)
    print(
        f"fleet: {arguments.gateways} gateways, interval {arguments.interval} s, {arguments.edges} edges "
        f"(one simulator process each) bridged to one central Mosquitto; run {arguments.duration} s; "
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}"
    )
    everyone = sampler.first_with(arguments.gateways)
    peak = max(sampler.samples, key=lambda sample: sum(sample[1]))
    at, connections, rss = everyone or peak
    held = f"{at - started:.1f} s" if everyone is not None else "NOT all connected"
    print(
        f"connect: the edges held every gateway after {held} (sampled every {arguments.sample} s, from the "
        f"simulators' start); simulator connect_s {summary.get('connect_s', 0):.1f} s, connect failures "
        f"{summary.get('connect_failures')}, connects {summary.get('connects')}"
    )
    print(f"connections per edge then: {connections} (peak total {sum(peak[1])})")
    for index, (before, then) in enumerate(zip(rss_before, rss, strict=True)):
        per = (then - before) / max(connections[index] / 1000, 1e-9)
        print(
            f"edge{index + 1}: RSS {before:.1f} -> {then:.1f} MiB with {connections[index]} connections = "
            f"{per:.2f} MiB per 1,000 connections"
        )
    run_s = max(arguments.duration, 1e-9)
    messages, telemetry, acked = summary.get("messages", 0), summary.get("telemetry", 0), summary.get("acked", 0)
    unconfirmed = summary.get("unconfirmed", 0)
    print(
        f"simulator: {messages} messages ({telemetry} telemetry) = {telemetry / run_s:.0f} telemetry msg/s "
        f"written; {acked} PUBACKed by the edges ({acked / run_s:.0f} msg/s over the run), unconfirmed "
        f"{unconfirmed}; CPU {summary.get('cpu_s', 0):.1f} s = "
        f"{summary.get('cpu_s', 0) / max(messages, 1) * 1e6:.0f} us/message (connects included)"
    )
    committed = final.get("messages", 0)
    first, last = final.get("first_commit"), final.get("last_commit")
    sustained = committed / max((last or 0) - (first or 0), 1e-9)
    drained = f"all committed {drained_s:.0f} s after the run" if drained_s is not None else "NOT all committed"
    latencies = final.get("latencies", [])
    print(
        f"ingest (SQLite): {committed} telemetry messages committed ({drained}, waited at most {arguments.drain} s), "
        f"sustained {sustained:.0f} msg/s; publish -> commit p50 {percentile(latencies, 0.5):.2f} s, "
        f"p99 {percentile(latencies, 0.99):.2f} s, max {max(latencies, default=float('nan')):.2f} s"
    )
    # PUBACKs are counted, not matched to messages: of the telemetry written but not stored, at most the
    # unconfirmed messages were never acknowledged; the rest was acknowledged by an edge and lost.
    missing = max(telemetry - stored, 0)
    print(
        f"loss: {stored} distinct (gateway, at) telemetry rows stored of {telemetry} written ({missing} missing, "
        f"{unconfirmed} messages unconfirmed): acknowledged but not stored between {max(missing - unconfirmed, 0)} "
        f"and {missing if unconfirmed else 0}"
    )
    edge_cpu = sum(cpu_all[edge.name] for edge in edges)
    ingest_cpu = final.get("cpu_s", 0.0) - ingest_cpu_before
    for kind, seconds in (("edges (all)", edge_cpu), ("central", cpu_all["central"]), ("ingest", ingest_cpu)):
        print(
            f"CPU {kind}: {seconds:.1f} s = {seconds / max(telemetry, 1) * 1e6:.0f} us per telemetry message, "
            f"{seconds / max(messages, 1) * 1e6:.0f} us per message (connects and drain included)"
        )
    simulated_s = max(summary.get("seconds", run_s), 1e-9)
    print(
        f"CPU while the simulators ran ({simulated_s:.0f} s, connects included): "
        + ", ".join(f"{name} {seconds:.1f} s ({seconds / simulated_s:.2f} cores)" for name, seconds in cpu_run.items())
        + f", simulators {summary.get('cpu_s', 0) / simulated_s:.2f} cores"
    )
    for broker in brokers:
        warnings = [line for line in broker.log.read_text(errors="replace").splitlines() if "rror" in line]
        if warnings:
            print(f"{broker.name} log: {len(warnings)} error lines, first: {warnings[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateways", type=int, default=50_000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--edges", type=int, default=3)
    parser.add_argument("--drain", type=float, default=120.0, help="s to wait for the ingest after the run")
    parser.add_argument("--sample", type=float, default=2.0, help="s between the edges' socket counts")
    parser.add_argument("--verbose", action="store_true", help="every simulator line")
    parser.add_argument(
        "--crash-edge", type=float, help="SIGKILL edge1 this many s after the simulators start, then restart it"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, store)")
    parser.add_argument("--crash-down", type=float, default=5.0, help="s edge1 stays down after --crash-edge")
    arguments = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bmsgate-bench-bridged-"))
    brokers: list[_Broker] = []
    try:
        _run(arguments, directory, brokers)
    finally:
        for broker in reversed(brokers):
            broker.stop()
        if arguments.keep:
            print(f"kept the brokers' configs, logs and the store in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
