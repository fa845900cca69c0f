"""Fleet ingest throughput: simulated gateways → real Mosquitto → ingest → SQLite (or PostgreSQL).

Starts a Mosquitto, ``--workers`` ingest processes (with several, telemetry is a ``$share/ingest/...``
shared subscription) and ``--generators`` load processes holding ``--gateways`` MQTT clients between them.
Each gateway publishes ~1 KB telemetry (one 16-cell battery, an inverter status, QoS 1) so that the total is
``--rate`` msg/s, for ``--duration`` s. Then it waits until every message is committed and prints:

- the publish rate reached and the sustained ingest rate (messages committed / time from first to last commit);
- publish → commit latency p50 / p99 / max (the message's ``at`` is its publish time; measured right after
  the commit, in the ingest process);
- ingest RSS (peak and at the end), batches, and what ingest refused or retried;
- ingest CPU time per message (user + system, whole process: MQTT, decoding, store thread), which holds
  even when the machine is shared and gives the rate one free core could sustain; the CPU the load
  generators and Mosquitto used beside it (on a 2-core machine they take most of the other core);
- publish → visible through the API: an API process (the real Litestar app on the same store) is polled by
  a probe (``GET /api/v1/gateways/{id}``, ``--probe-gateways`` gateways, each every ``--probe-interval`` s);
  each time a newer sample shows, its age is recorded (so the figure includes up to one polling interval).

``--profile`` adds the top functions of one ingest worker (cProfile), to see where the time goes.

``registry --gateways 10000`` instead times the fleet overview's read (``list_gateways``) at that size.

``--pool`` runs ``--workers`` as ``fleet serve --ingest-workers N`` does (:class:`IngestWorkers`: one server
process, N worker processes handing their batches back; the latency is then taken back in the server
process, and "ingest worker 0" is that process with its workers' CPU). ``--alarms`` adds the alarm engine
as an observer of every batch, as in ``fleet serve``.

Why one long module: the benchmark starts itself in each of its roles (``serve``, ``generate``, ``api``,
the driver), so every role lives in this one script, each in its own section.

Usage: python benchmarks/fleet_ingest.py [--gateways 1000] [--rate 5000] [--duration 20] [--workers 1]
       [--generators 2] [--postgres URL|auto] [--profile] [--no-api] [--pool] [--alarms]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import io
import json
import os
import pstats
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bmsgate.fleet.protocol import OFFLINE, BatteryReading, Channel, TelemetryMessage, compact_snapshot, encode, topic
from bmsgate.fleet.server.ingest import Ingest, IngestSettings, IngestWorkers, tune_gc_for_ingest
from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.repository import IngestBatch, WriteResult
from bmsgate.fleet.simulate.wire import ConnectOptions, RawGatewayConnection
from bmsgate.model import BatterySnapshot
from bmsgate.mqtt.broker import find_mosquitto, free_port
from bmsgate.mqtt.client import connect
from bmsgate.mqtt.settings import BrokerSettings

_AT_TOKEN = 1111111111.5
_SEQ_TOKEN = 987654321


def _template(gateway: str) -> str:
    cells = tuple(3.3 + 0.001 * index for index in range(16))
    snapshot = BatterySnapshot(
        battery_id="b1",
        timestamp=_AT_TOKEN,
        protocol="jk",
        voltage=round(sum(cells), 3),
        current=-12.5,
        soc=80.0,
        soh=99.0,
        remaining_capacity=224.0,
        full_capacity=280.0,
        cycles=10,
        cell_voltages=cells,
        temperatures=(25.0, 26.0, 24.5, 25.5),
        mosfet_temperature=31.0,
        charge_enabled=True,
        discharge_enabled=True,
        balancing=False,
    )
    message = TelemetryMessage(
        v=1,
        gateway=gateway,
        seq=_SEQ_TOKEN,
        at=_AT_TOKEN,
        batteries=[BatteryReading(id="b1", age_s=0.4, stale=False, snapshot=compact_snapshot(snapshot))],
        inverter={
            "charge_voltage": 55.2,
            "charge_current": 150.0,
            "discharge_current": 200.0,
            "soc": 80.0,
            "soh": 99.0,
            "phase": "keep",
            "alarms": [],
            "packs_online": 1,
        },
    )
    return encode(message).decode().replace(repr(_AT_TOKEN), "@AT@").replace(str(_SEQ_TOKEN), "@SEQ@")


def _payload(template: str, seq: int) -> bytes:
    return template.replace("@AT@", repr(time.time())).replace("@SEQ@", str(seq)).encode()


# -- the ingest worker process ----------------------------------------------------------------------------


class _Latencies:
    """Records publish → commit of every telemetry message (an ingest batch observer)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.first_commit: float | None = None
        self.last_commit: float | None = None
        self.messages = 0

    def observe(self, batch: IngestBatch, result: WriteResult) -> None:
        now = time.time()
        if batch.telemetry:
            self.first_commit = self.first_commit or now
            self.last_commit = now
            self.messages += len(batch.telemetry)
            self.values.extend(now - message.at for message, _ in batch.telemetry)


def _rss_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def _serve(arguments: argparse.Namespace) -> None:
    if not arguments.python_gc:
        tune_gc_for_ingest()  # as fleet serve does
    settings = (
        StoreSettings(postgres_url=arguments.postgres) if arguments.postgres else StoreSettings(data_dir=arguments.data)
    )
    store = await open_store(settings)
    latencies = _Latencies()
    observers: list[Any] = [latencies]
    jobs = []
    if arguments.alarms:
        from bmsgate.fleet.server.alarms import AlarmEngine

        engine = AlarmEngine(store)
        observers.append(engine)
        jobs.append(engine.run())
    ingest: Ingest | IngestWorkers
    if arguments.pool:
        # fleet serve --ingest-workers N: the latency is taken when a batch is back in this process.
        ingest = IngestWorkers(
            settings,
            BrokerSettings(url=arguments.broker),
            workers=arguments.workers,
            settings=IngestSettings(client_id="bench-ingest", max_batch=arguments.batch, max_delay_s=arguments.delay),
            observers=observers,
        )
    else:
        ingest = Ingest(
            store,
            BrokerSettings(url=arguments.broker),
            settings=IngestSettings(
                client_id=f"bench-ingest-{arguments.worker}",
                share_group="ingest" if arguments.workers > 1 else None,
                max_batch=arguments.batch,
                max_delay_s=arguments.delay,
            ),
            observers=observers,
        )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    profile = cProfile.Profile() if arguments.profile else None
    if profile is not None:
        profile.enable()
    task = asyncio.create_task(ingest.run())
    side_tasks = [asyncio.create_task(job) for job in jobs]
    stats_path = Path(arguments.stats)

    def write_stats(final: bool) -> None:
        stats: dict[str, Any] = {
            "messages": latencies.messages,
            "first_commit": latencies.first_commit,
            "last_commit": latencies.last_commit,
            "counters": ingest.counters.to_dict(),
            "rss_kib": _rss_kib(),
            "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
            + sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]),  # pool workers, once they ended
            "connected": ingest.connected.is_set(),
        }
        if final:
            stats["latencies"] = latencies.values
        temporary = stats_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(stats))
        temporary.replace(stats_path)

    while not stop.is_set():
        write_stats(final=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    for running in (task, *side_tasks):
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    if profile is not None:
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(18)
        Path(arguments.stats).with_suffix(".profile").write_text(out.getvalue())
    write_stats(final=True)
    await store.close()


# -- the load generator process ---------------------------------------------------------------------------


def _raw_gateway(gateway: str) -> RawGatewayConnection:
    """One gateway on the simulator's raw MQTT 3.1.1 connection (~20 instead of ~170 us a message through paho).

    The broker sees exactly what a gateway sends (its own client, a retained QoS 1 will, QoS 1 ~1 KB
    payloads), and on a 2-core machine the load generator does not take the CPU the ingest is measured with.
    """
    options = ConnectOptions(client_id=gateway, will_topic=topic(gateway, Channel.AVAILABILITY), will_payload=OFFLINE)
    return RawGatewayConnection(options, lambda _lost: None)


async def _generate(arguments: argparse.Namespace) -> None:
    """``--gateways`` raw MQTT gateways between them publishing ``--rate`` msg/s, on one timer."""
    if arguments.generator == "adapter":
        await _generate_with_adapter(arguments)
        return
    url = BrokerSettings(url=arguments.broker)
    loop = asyncio.get_running_loop()
    gateways = [f"bench-{arguments.offset + index:05d}" for index in range(arguments.gateways)]
    clients: list[RawGatewayConnection] = []
    for first in range(0, len(gateways), 50):  # not a thousand TCP handshakes at once
        batch = []
        for gateway in gateways[first : first + 50]:
            _, client = await loop.create_connection(functools.partial(_raw_gateway, gateway), url.host, url.port)
            batch.append(client)
        await asyncio.gather(*(client.connected for client in batch))
        clients.extend(batch)
    templates = [_template(gateway) for gateway in gateways]
    names = [topic(gateway, Channel.TELEMETRY).encode() for gateway in gateways]
    interval = arguments.gateways / arguments.rate
    start = time.time() + 1.0
    end = start + arguments.duration
    due = [start + interval * index / len(gateways) for index in range(len(gateways))]
    seqs = [0] * len(gateways)
    sent = 0
    while True:
        now = time.time()
        if now >= end:
            break
        for index, at in enumerate(due):
            if at <= now and at < end:
                clients[index].publish(names[index], _payload(templates[index], seqs[index]))
                seqs[index] += 1
                due[index] = at + interval
                sent += 1
        await asyncio.sleep(0.005)
    deadline = time.time() + 60
    while any(client.in_flight for client in clients) and time.time() < deadline:  # noqa: ASYNC110 - a poll of counters
        await asyncio.sleep(0.05)
    acked = sum(client.acked for client in clients)
    for client in clients:
        client.disconnect()  # no last will
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    stats = json.dumps({"sent": acked, "written": sent, "start": start, "end": time.time(), "cpu_s": cpu})
    await asyncio.to_thread(Path(arguments.stats).write_text, stats)


async def _generate_with_adapter(arguments: argparse.Namespace) -> None:
    """The same load through bmsgate's own MQTT adapter (aiomqtt/paho), as the fleet agent publishes."""
    broker = BrokerSettings(url=arguments.broker)
    gateways = [f"bench-{arguments.offset + index:05d}" for index in range(arguments.gateways)]
    interval = arguments.gateways / arguments.rate
    start = time.time() + 2.0 + arguments.gateways / 500  # every client connected before the clock starts
    semaphore = asyncio.Semaphore(50)
    end = start + arguments.duration
    sent = 0

    async def one(index: int, gateway: str) -> None:
        nonlocal sent
        template = _template(gateway)
        name = topic(gateway, Channel.TELEMETRY)
        async with contextlib.AsyncExitStack() as stack:
            async with semaphore:  # not a thousand TCP handshakes at once
                session = await stack.enter_async_context(
                    connect(
                        broker,
                        will_topic=topic(gateway, Channel.AVAILABILITY),
                        will_payload="offline",
                        client_id=gateway,
                    )
                )
            next_at = start + interval * index / len(gateways)
            seq = 0
            while next_at < end:
                await asyncio.sleep(max(0.0, next_at - time.time()))
                await session.publish(name, _payload(template, seq), retain=False, qos=1)
                sent += 1
                seq += 1
                next_at += interval

    async with asyncio.TaskGroup() as group:
        for index, gateway in enumerate(gateways):
            group.create_task(one(index, gateway))
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    stats = json.dumps({"sent": sent, "start": start, "end": time.time(), "cpu_s": cpu})
    await asyncio.to_thread(Path(arguments.stats).write_text, stats)


# -- the API process and its probe -----------------------------------------------------------------------


async def _api(arguments: argparse.Namespace) -> None:
    """Serve the real API on the benchmark's store and poll it for new samples until SIGTERM."""
    import httpx

    from bmsgate.fleet.server.api.app import create_app
    from bmsgate.fleet.server.api.ratelimit import RateLimit
    from bmsgate.fleet.server.api.server import HttpServer
    from bmsgate.fleet.server.api.settings import ApiSettings
    from bmsgate.fleet.server.auth import Role, TokenStore
    from bmsgate.fleet.server.live import LiveFeed

    settings = (
        StoreSettings(postgres_url=arguments.postgres) if arguments.postgres else StoreSettings(data_dir=arguments.data)
    )
    store = await open_store(settings)
    tokens = TokenStore(Path(arguments.stats).parent / "api-tokens")
    token = tokens.create(Role.VIEWER, "bench")

    async def no_commands(gateway_id: str, command: object) -> None:
        raise RuntimeError("the benchmark sends no commands")

    # The probe asks more often than a dashboard user may (1,200 requests/min per token).
    api_settings = ApiSettings(token_limit=RateLimit(per_minute=60_000, burst=1000))
    app = create_app(store=store, tokens=tokens, feed=LiveFeed(), send_command=no_commands, settings=api_settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ages: list[float] = []
    errors = 0
    step = max(1, arguments.gateways // arguments.probe_gateways)
    probed = [f"bench-{index:05d}" for index in range(0, arguments.gateways, step)][: arguments.probe_gateways]
    newest: dict[str, float] = {}
    async with (
        HttpServer(app, port=0) as server,
        httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http,
    ):
        await asyncio.to_thread(Path(arguments.stats).write_text, json.dumps({"ready": True}))
        pause = arguments.probe_interval / len(probed)
        while not stop.is_set():
            for gateway in probed:
                try:
                    response = await http.get(f"/api/v1/gateways/{gateway}")
                except httpx.HTTPError:
                    errors += 1
                    continue
                now = time.time()
                if response.status_code == 200:
                    batteries = response.json()["batteries"]
                    at = batteries[0]["at"] if batteries else None
                    if at is not None and at > newest.get(gateway, 0.0):
                        if gateway in newest:  # the first one seen may be from before the probe started
                            ages.append(now - at)
                        newest[gateway] = at
                elif response.status_code != 404:
                    errors += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                if stop.is_set():
                    break
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    final = json.dumps({"ready": True, "ages": ages, "errors": errors, "cpu_s": cpu})
    await asyncio.to_thread(Path(arguments.stats).write_text, final)
    await store.close()


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(root: int) -> float:
    """CPU seconds of a process and everything below it (live descendants, and children it reaped).

    PostgreSQL's work is in its backends (one per connection), children of the postmaster.
    """
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            stats[int(entry.name)] = fields
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    ticks = 0
    for pid in tree:
        counted = stats.get(pid)
        if counted is not None:
            ticks += int(counted[11]) + int(counted[12]) + int(counted[13]) + int(counted[14])
    return ticks / os.sysconf("SC_CLK_TCK")


# -- the driver -------------------------------------------------------------------------------------------


def _mosquitto(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = find_mosquitto()
    if binary is None:
        sys.exit("mosquitto is not installed")
    port = free_port()
    config = directory / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
        # ingest acknowledges after commit: the in-flight window must cover a batch or two
        "max_inflight_messages 20000\nmax_queued_messages 1000000\nmax_connections -1\n"
    )
    with (directory / "mosquitto.log").open("ab") as log:
        process = subprocess.Popen([str(binary), "-c", str(config)], stdout=log, stderr=log)
    time.sleep(0.5)
    return process, port


def _spawn(role: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, role, *extra])


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def _drive(arguments: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="bmsgate-bench-"))
    cluster = None
    postgres = arguments.postgres
    if postgres == "auto":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.fleet.server.conftest import PostgresCluster, _postgres_binaries

        binaries = _postgres_binaries()
        if binaries is None:
            sys.exit("PostgreSQL server binaries not installed")
        pg_directory = Path(tempfile.mkdtemp(prefix="bmsgate-bench-pg-"))
        cluster = PostgresCluster(binaries, pg_directory)
        cluster.start()
        postgres = cluster.new_database()
    broker, port = _mosquitto(directory)
    url = f"mqtt://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        store_args = ["--postgres", postgres] if postgres else ["--data", str(directory / "data")]
        if not postgres:  # migrate once, before several workers race for it
            asyncio.run(_migrate(directory / "data"))
        workers = []
        for worker in range(1 if arguments.pool else arguments.workers):
            stats = directory / f"ingest-{worker}.json"
            extra = ["--profile"] if arguments.profile and worker == 0 else []
            workers.append(stats)
            processes.append(
                _spawn(
                    "serve",
                    "--broker",
                    url,
                    *store_args,
                    "--worker",
                    str(worker),
                    "--workers",
                    str(arguments.workers),
                    "--stats",
                    str(stats),
                    "--batch",
                    str(arguments.batch),
                    "--delay",
                    str(arguments.delay),
                    *(["--python-gc"] if arguments.python_gc else []),
                    *(["--pool"] if arguments.pool else []),
                    *(["--alarms"] if arguments.alarms else []),
                    *extra,
                )
            )
        deadline = time.time() + 20
        while not all(_read(path).get("connected") for path in workers):
            if time.time() > deadline:
                sys.exit("ingest did not connect")
            time.sleep(0.1)
        api_stats = directory / "api.json"
        if arguments.api:
            processes.append(
                _spawn(
                    "api",
                    *store_args,
                    "--stats",
                    str(api_stats),
                    "--gateways",
                    str(arguments.gateways),
                    "--probe-gateways",
                    str(arguments.probe_gateways),
                    "--probe-interval",
                    str(arguments.probe_interval),
                )
            )
            deadline = time.time() + 30
            while not _read(api_stats).get("ready"):
                if time.time() > deadline:
                    sys.exit("the API did not start")
                time.sleep(0.1)
        broker_cpu_before = _process_cpu_s(broker.pid)
        database_cpu_before = _tree_cpu_s(cluster.process.pid) if cluster is not None and cluster.process else 0.0
        generators = []
        per = arguments.gateways // arguments.generators
        for index in range(arguments.generators):
            stats = directory / f"gen-{index}.json"
            generators.append(
                (
                    stats,
                    _spawn(
                        "generate",
                        "--broker",
                        url,
                        "--gateways",
                        str(per),
                        "--offset",
                        str(index * per),
                        "--rate",
                        str(arguments.rate / arguments.generators),
                        "--duration",
                        str(arguments.duration),
                        "--stats",
                        str(stats),
                        "--generator",
                        arguments.generator,
                    ),
                )
            )
        for _, process in generators:
            process.wait()
        sent = sum(_read(path).get("sent", 0) for path, _ in generators)
        starts = [_read(path)["start"] for path, _ in generators]
        ends = [_read(path)["end"] for path, _ in generators]
        deadline = time.time() + 120
        while sum(_read(path).get("messages", 0) for path in workers) < sent and time.time() < deadline:
            time.sleep(0.2)
        broker_cpu = _process_cpu_s(broker.pid) - broker_cpu_before
        database_cpu = (
            _tree_cpu_s(cluster.process.pid) - database_cpu_before if cluster is not None and cluster.process else None
        )
        generator_cpu = sum(_read(path).get("cpu_s", 0.0) for path, _ in generators)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
        finals = [_read(path) for path in workers]
        _report(arguments, sent, min(starts), max(ends), finals, directory, bool(postgres))
        print(
            f"beside ingest: load generators {generator_cpu:.1f} s CPU "
            f"({generator_cpu / max(sent, 1) * 1e6:.0f} us/message), Mosquitto {broker_cpu:.1f} s CPU "
            f"({broker_cpu / max(sent, 1) * 1e6:.0f} us/message)"
            + (
                f", PostgreSQL {database_cpu:.1f} s CPU ({database_cpu / max(sent, 1) * 1e6:.0f} us/message)"
                if database_cpu is not None
                else ""
            )
        )
        if arguments.api:
            api = _read(api_stats)
            ages = api.get("ages", [])
            print(
                f"publish -> visible through the API (GET /api/v1/gateways/{{id}}, {arguments.probe_gateways} "
                f"gateways each polled every {arguments.probe_interval} s): {len(ages)} samples, "
                f"p50 {_percentile(ages, 0.5):.3f} s, p99 {_percentile(ages, 0.99):.3f} s, "
                f"max {max(ages, default=float('nan')):.3f} s; API errors {api.get('errors')}, "
                f"API process CPU {api.get('cpu_s', float('nan')):.1f} s"
            )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        broker.terminate()
        broker.wait()
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.directory, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)


async def _migrate(data: Path) -> None:
    store = await open_store(StoreSettings(data_dir=data))
    await store.close()


def _report(
    arguments: argparse.Namespace,
    sent: int,
    start: float,
    end: float,
    finals: list[dict[str, Any]],
    directory: Path,
    postgres: bool,
) -> None:
    stored = sum(final["messages"] for final in finals)
    first = min(final["first_commit"] for final in finals if final["first_commit"])
    last = max(final["last_commit"] for final in finals if final["last_commit"])
    latencies = [value for final in finals for value in final["latencies"]]
    size = len(_payload(_template("bench-00000"), 1000))
    print(
        f"backend: {'postgresql' if postgres else 'sqlite'}; gateways {arguments.gateways}, "
        f"{arguments.workers} ingest worker(s), {arguments.generators} generator(s), payload {size} B"
    )
    print(f"published: {sent} msgs in {end - start:.1f} s = {sent / (end - start):.0f} msg/s (target {arguments.rate})")
    print(f"committed: {stored} msgs ({sent - stored} missing); sustained ingest {stored / (last - first):.0f} msg/s")
    print(
        f"publish -> commit latency: p50 {_percentile(latencies, 0.5):.3f} s, "
        f"p99 {_percentile(latencies, 0.99):.3f} s, max {max(latencies, default=float('nan')):.3f} s"
    )
    for index, final in enumerate(finals):
        rss = final["rss_kib"]
        counters = final["counters"]
        now_mib, peak_mib = rss.get("VmRSS", 0) / 1024, rss.get("VmHWM", 0) / 1024
        print(
            f"ingest worker {index}: RSS {now_mib:.0f} MiB (peak {peak_mib:.0f} MiB), {counters['batches']} batches, "
            f"rejected {counters['rejected']}, store retries {counters['store_failures']}, "
            f"backpressure waits {counters['backpressure_waits']}"
        )
        if final["messages"]:
            per_message = final["cpu_s"] / final["messages"] * 1e6
            print(
                f"ingest worker {index}: CPU {final['cpu_s']:.1f} s = {per_message:.0f} us/message "
                f"(so at most ~{1e6 / per_message:.0f} msg/s per fully available core)"
            )
    profile = directory / "ingest-0.profile"
    if profile.exists():
        print(profile.read_text())


async def _registry(arguments: argparse.Namespace) -> None:
    """Time ``list_gateways`` (what the fleet overview reads) at ``--gateways`` gateways."""
    from tests.fleet.server.store.messages import state

    from bmsgate.fleet.protocol import decode

    directory = Path(tempfile.mkdtemp(prefix="bmsgate-bench-registry-"))
    settings = (
        StoreSettings(postgres_url=arguments.postgres) if arguments.postgres else StoreSettings(data_dir=directory)
    )
    store = await open_store(settings)
    try:
        now = time.time()
        for first in range(0, arguments.gateways, 1000):
            batch = IngestBatch()
            for index in range(first, min(first + 1000, arguments.gateways)):
                gateway = f"site-{index:05d}"
                batch.states.append((state(gateway, sent_at=now), now))
                message = decode(topic(gateway, Channel.TELEMETRY), _payload(_template(gateway), 1)).message
                assert isinstance(message, TelemetryMessage)
                batch.telemetry.append((message, now))
            await store.write_batch(batch)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            gateways = await store.list_gateways()
            timings.append(time.perf_counter() - started)
        print(
            f"list_gateways at {len(gateways)} gateways ({store.backend}): "
            f"best {min(timings) * 1000:.0f} ms, median {sorted(timings)[2] * 1000:.0f} ms"
        )
    finally:
        await store.close()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="drive", choices=["drive", "serve", "generate", "registry", "api"])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--generators", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--postgres")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--python-gc", action="store_true", help="keep Python's GC thresholds in the ingest")
    parser.add_argument(
        "--pool", action="store_true", help="--workers as fleet serve --ingest-workers runs them (IngestWorkers)"
    )
    parser.add_argument(
        "--alarms", action="store_true", help="the alarm engine observes the batches, as in fleet serve"
    )
    parser.add_argument(
        "--generator", choices=["raw", "adapter"], default="raw", help="raw MQTT sockets, or bmsgate's adapter"
    )
    parser.add_argument("--no-api", dest="api", action="store_false", help="skip the API visibility probe")
    parser.add_argument("--probe-gateways", type=int, default=5)
    parser.add_argument("--probe-interval", type=float, default=0.2)
    parser.add_argument("--broker")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--stats")
    arguments = parser.parse_args()
    if arguments.role == "serve":
        asyncio.run(_serve(arguments))
    elif arguments.role == "generate":
        asyncio.run(_generate(arguments))
    elif arguments.role == "api":
        asyncio.run(_api(arguments))
    elif arguments.role == "registry":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        asyncio.run(_registry(arguments))
    else:
        _drive(arguments)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
