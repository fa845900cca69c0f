"""``bmsgate fleet serve`` and ``bmsgate fleet demo``: run the fleet server (and simulated sites) until stopped.

Both stop cleanly on SIGINT/SIGTERM: the HTTP server, ingest and alarm engine end, the store closes, and the
broker the server started is stopped last. A long-lived part that fails on its own stops the command with a
non-zero exit and says why, rather than leaving half a server running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from bmsgate.app.cli.arguments import int_range, positive_float
from bmsgate.datafiles import describe_validation_errors, parse_yaml, read_text
from bmsgate.errors import BmsgateError, ConfigError, ConfigProblem

__all__ = ["add_fleet_parsers"]

_LOGGER = logging.getLogger("bmsgate.fleet")


def add_fleet_parsers(actions: Any) -> None:
    """Add ``fleet serve`` and ``fleet demo`` to the ``fleet`` command's actions."""
    serve = actions.add_parser(
        "serve",
        help="run the fleet server: broker, store, ingest, alarms, API and dashboard",
        description="Run the fleet server with embedded defaults: its own Mosquitto (TLS, per-gateway "
        "ACLs), an SQLite store and the dashboard on 127.0.0.1:8080. The first start creates an admin "
        "token and prints it once.",
    )
    serve.add_argument("--data", metavar="DIR", type=Path, default=None, help="data directory")
    serve.add_argument("--http", metavar="HOST:PORT", default="127.0.0.1:8080", help="dashboard and API address")
    serve.add_argument("--postgres", metavar="URL", help="store in PostgreSQL (postgresql://user:pass@host/db)")
    serve.add_argument("--broker", metavar="URL", help="use an existing broker (mqtt://user:pass@host:port)")
    serve.add_argument(
        "--broker-hosts",
        metavar="HOST:PORT,...",
        help="more addresses of the --broker tier, tried in order when it does not connect (cluster nodes)",
    )
    serve.add_argument(
        "--cluster",
        metavar="URLS",
        help="cluster mode: the NATS cluster's client URLs, comma-separated (nats://h1:4222,nats://h2:4222,...);"
        " ingest reads a shared JetStream consumer; --broker names the cluster's MQTT endpoint",
    )
    serve.add_argument("--gateway-port", type=int_range(1, 65535), default=8883, help="TLS port for gateways")
    serve.add_argument(
        "--cert-port", type=int_range(0, 65535), default=8884, help="mutual-TLS port for gateways (0: off)"
    )
    serve.add_argument(
        "--artifacts-port",
        type=int_range(0, 65535),
        default=8443,
        help="HTTPS port of the pack repository for gateways (0: off)",
    )
    serve.add_argument("--public-host", metavar="NAME", help="the name gateways reach this server by")
    serve.add_argument("--tile-url", metavar="URL", help="map tile server URL template (default: offline outline)")
    serve.add_argument("--config", metavar="FILE", type=Path, help="YAML with alarms:, notify: and retention: sections")
    serve.add_argument(
        "--ingest-workers",
        type=int_range(1, 64),
        default=1,
        help="ingest processes sharing the telemetry (default 1: in the server process, best on 2 cores; "
        "see docs/fleet/storage-and-alarms.md)",
    )
    serve.add_argument(
        "--processes",
        type=int_range(1, 64),
        default=1,
        help="cluster mode only: server processes sharing the --http address (SO_REUSEPORT), supervised by "
        "this one; one of them (elected by a PostgreSQL lock) runs alarms and rollouts (see docs/fleet-scale.md)",
    )
    serve.add_argument(
        "--hung-after",
        type=positive_float(3600),
        default=10.0,
        metavar="S",
        help="with --processes: a server process that has not answered the supervisor's probe for S seconds "
        "is killed and started again (default 10)",
    )
    serve.set_defaults(handler=_serve)

    demo = actions.add_parser(
        "demo",
        help="a local fleet server with N simulated gateways over South Africa",
        description="Run a fresh fleet server in a temporary directory with simulated sites, each a real "
        "gateway with the real fleet agent; prints the dashboard URL and the admin token.",
    )
    demo.add_argument("--gateways", type=int_range(0, 5000), default=30, help="simulated sites (default 30)")
    demo.add_argument("--http", metavar="HOST:PORT", default=None, help="dashboard address (default 127.0.0.1:8080)")
    demo.add_argument(
        "--interval", type=positive_float(3600), default=10.0, help="telemetry interval of the sites, s (default 10)"
    )
    demo.add_argument("--duration", type=positive_float(), default=None, help="stop after this many seconds")
    demo.set_defaults(handler=_demo)


def _host_port(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"expected HOST:PORT, got {text!r}", key_path=option)
    return host, int(port)


def _file_sections(path: Path) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """The known sections of a ``--config`` file, and a problem for each unknown one."""

    def error(reason: str) -> ConfigError:
        return ConfigError(reason, source=str(path))

    data = parse_yaml(read_text(path, error=error), error=error)
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with alarms:, notify: and retention:", source=str(path))
    known = {"alarms", "notify", "retention"}
    problems = [
        ConfigProblem("unknown section (expected alarms, notify or retention)", key_path=str(key), source=str(path))
        for key in sorted(set(data) - known, key=str)
    ]
    return {key: value for key, value in data.items() if key in known}, problems


def _comma_list(text: str | None) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()] if text else []


def _serve_settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError  # noqa: PLC0415

    from bmsgate.fleet.server.service import FleetServerSettings  # noqa: PLC0415 - needs the [fleet] extra

    host, port = _host_port(args.http, "--http")
    values: dict[str, Any] = {
        "data_dir": args.data,
        "http_host": host,
        "http_port": port,
        "postgres_url": args.postgres,
        "broker_url": args.broker,
        "gateway_port": args.gateway_port,
        "cert_port": args.cert_port or None,
        "artifacts_port": args.artifacts_port or None,
        "public_host": args.public_host,
        "tile_url": args.tile_url,
        "ingest_workers": args.ingest_workers,
        "processes": args.processes,
        "cluster": _comma_list(args.cluster),
        "broker_hosts": _comma_list(args.broker_hosts),
    }
    source = ""
    problems: list[ConfigProblem] = []
    if args.config is not None:
        source = str(args.config)
        sections, problems = _file_sections(args.config)
        values.update(sections)
    try:
        settings = FleetServerSettings.model_validate(values)
    except ValidationError as exc:
        problems += [
            ConfigProblem(problem.reason, key_path=problem.location, source=source)
            for problem in describe_validation_errors(exc)
        ]
    if problems:
        raise ConfigError(problems=problems)
    return settings


async def _supervise_until_stopped(settings: Any, hung_after_s: float) -> int:
    from bmsgate.fleet.server.processes import ServerProcesses  # noqa: PLC0415 - needs the [fleet] extra

    processes = ServerProcesses(settings, hung_after_s=hung_after_s)
    supervisor = asyncio.create_task(processes.run())
    ready = asyncio.create_task(processes.ready.wait())
    try:
        await asyncio.wait({supervisor, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            url = next(iter(processes.urls.values()))
            _say(f"fleet server: {settings.processes} processes, dashboard and API at {url}/")
            if processes.admin_token:
                _say(f"first start: admin token (shown once, keep it): {processes.admin_token}")
        await supervisor  # runs until cancelled; it ends by itself only on a failure to prepare
    except BmsgateError as exc:
        _LOGGER.error("fleet server: cannot start the processes: %s", exc)  # noqa: TRY400 - the reason, no traceback
        return 1
    except asyncio.CancelledError:
        _say("fleet server: stopping")
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        return 0
    finally:
        ready.cancel()
    return 1


def _install_stop(task: asyncio.Task[Any]) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, task.cancel)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def _serve_until_stopped(settings: Any) -> int:
    from bmsgate.fleet.server.service import FleetServer  # noqa: PLC0415

    async with FleetServer(settings) as running:
        _say(f"fleet server: dashboard and API at {running.url}/  (data directory {running.data.root})")
        if running.artifacts_url:
            _say(f"fleet server: pack repository for gateways at {running.artifacts_url}/")
        if running.admin_token:
            _say(f"first start: admin token (shown once, keep it): {running.admin_token}")
        try:
            failure = await running.failure
        except asyncio.CancelledError:
            _say("fleet server: stopping")
            return 0
        _LOGGER.error("fleet server stopped: %s", failure)
        return 1


async def _main_task(coroutine: Any) -> int:
    task: asyncio.Task[int] = asyncio.create_task(coroutine)
    _install_stop(task)
    try:
        return await task
    except asyncio.CancelledError:
        return 0


def _serve(args: argparse.Namespace) -> int:
    _logging()
    settings = _serve_settings(args)
    from bmsgate.fleet.server.ingest import tune_gc_for_ingest  # noqa: PLC0415 - needs the [fleet] extra

    if settings.processes > 1:
        return asyncio.run(_main_task(_supervise_until_stopped(settings, args.hung_after)))
    tune_gc_for_ingest()  # this process runs the ingest (or hands the workers' batches on): worth it
    return asyncio.run(_main_task(_serve_until_stopped(settings)))


async def _demo_until_stopped(args: argparse.Namespace) -> int:
    from bmsgate.fleet.demo import FleetDemo, FleetDemoOptions  # noqa: PLC0415 - needs the [fleet] extra

    host, port = ("127.0.0.1", None) if args.http is None else _host_port(args.http, "--http")
    options = FleetDemoOptions(gateways=args.gateways, http_host=host, http_port=port, interval=args.interval)
    async with FleetDemo(options) as demo:
        _say(demo.banner())
        try:
            async with asyncio.timeout(args.duration):
                await demo.run_sites()
        except TimeoutError:
            return 0
        except asyncio.CancelledError:
            return 0
    return 0


def _demo(args: argparse.Namespace) -> int:
    _logging()
    return asyncio.run(_main_task(_demo_until_stopped(args)))


def _logging() -> None:
    logging.getLogger("bmsgate").setLevel(logging.INFO)
    for noisy in ("yoyo", "uvicorn", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
