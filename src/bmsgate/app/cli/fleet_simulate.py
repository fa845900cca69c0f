"""``bmsgate fleet simulate``: a simulated fleet of gateways against a real broker, reporting what it sent.

The gateways speak the agent's protocol (retained ``online``/``offline`` availability with a last will,
retained state, telemetry every ``--interval`` s, alarm events) over raw MQTT 3.1.1 sockets, cheap enough
for tens of thousands from one process. Identities come from enrolled credentials files
(``--credentials-dir``: every ``*.json`` in it, one gateway each), one shared ``--username``/``--password``,
or none (an anonymous broker; the gateways are then ``sim-00000`` ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bmsgate.app.cli.arguments import int_range, positive_float
from bmsgate.errors import ConfigError

__all__ = ["add_fleet_parsers"]

_DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a ratio is between 0 and 1, not {value}")
    return value


def add_fleet_parsers(actions: Any) -> None:
    """Add ``fleet simulate`` to the ``fleet`` command's actions."""
    simulate = actions.add_parser(
        "simulate",
        help="simulate many gateways against a broker (load test)",
        description="Simulated gateways (real protocol, raw MQTT 3.1.1, QoS 1) publishing to a broker; prints "
        "what was sent each second and a JSON summary at the end.",
    )
    simulate.add_argument("--gateways", type=int_range(1, 1_000_000), default=100, help="how many (default 100)")
    simulate.add_argument("--interval", type=positive_float(86400), default=10.0, help="telemetry interval, s")
    simulate.add_argument(
        "--broker",
        metavar="URL[,URL...]",
        help=f"mqtt[s]://host:port (default {_DEFAULT_BROKER}); several, comma-separated (the nodes of a "
        "cluster): with --processes each process takes the next one, in one process the gateways take turns",
    )
    simulate.add_argument("--credentials-dir", metavar="DIR", type=Path, help="enrolled gateways' credentials")
    simulate.add_argument("--username", help="one user name for every gateway")
    simulate.add_argument("--password", help="its password")
    simulate.add_argument("--duration", type=positive_float(), help="seconds to run (default: until stopped)")
    simulate.add_argument("--faults", type=_ratio, default=0.0, help="share raising an alarm per interval")
    simulate.add_argument("--churn", type=_ratio, default=0.0, help="share dropping off (last will) per interval")
    simulate.add_argument("--offset", type=int_range(0, 10_000_000), default=0, help="first gateway number")
    simulate.add_argument(
        "--processes",
        type=int_range(1, 64),
        default=1,
        help="split the gateways over this many processes (one core and ~20k sockets each; default 1)",
    )
    simulate.add_argument("--quiet", action="store_true", help="no per-second lines")
    simulate.set_defaults(handler=_simulate)


def _logins(args: argparse.Namespace) -> tuple[list[Any], str | None, str | None]:
    """The gateways' logins, the broker URL their credentials name (if any), and a CA to verify it with."""
    from bmsgate.fleet.credentials import read_credentials  # noqa: PLC0415 - keep `--help` fast
    from bmsgate.fleet.simulate import GatewayLogin  # noqa: PLC0415

    if args.credentials_dir is None:
        names = [f"sim-{args.offset + index:05d}" for index in range(args.gateways)]
        return [GatewayLogin(name, args.username, args.password) for name in names], None, None
    if args.username is not None:
        raise ConfigError("--credentials-dir and --username exclude each other", key_path="--username")
    files = sorted(args.credentials_dir.glob("*.json"))[args.offset : args.offset + args.gateways]
    if not files:
        raise ConfigError(f"no *.json credentials in {args.credentials_dir}", key_path="--credentials-dir")
    credentials = [read_credentials(path, key_path=str(path)) for path in files]
    for item in credentials:
        if item.password is None:
            raise ConfigError(
                f"{item.gateway}: client-certificate credentials are not simulated", key_path="--credentials-dir"
            )
    logins = [
        GatewayLogin(item.gateway, item.username, item.password.get_secret_value())
        for item in credentials
        if item.password
    ]
    return logins, credentials[0].broker_url, credentials[0].ca_pem


def _broker_urls(text: str) -> list[str]:
    """The comma-separated URLs of ``--broker``, each checked (scheme and host).

    Raises:
        ConfigError: an empty entry, a scheme other than mqtt:// / mqtts://, no host, a bad port, or the
            schemes mixed (one TLS setting for every gateway).
    """
    urls = [part.strip() for part in text.split(",")]
    schemes = set()
    for index, url in enumerate(urls):
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked for it
        except ValueError as exc:
            raise ConfigError(f"{url!r}: {exc}", key_path=f"--broker[{index}]") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"not an mqtt:// or mqtts:// URL: {url!r}", key_path=f"--broker[{index}]")
        schemes.add(parts.scheme)
    if len(schemes) > 1:
        raise ConfigError("--broker: give every URL with the same scheme (mqtt:// or mqtts://)", key_path="--broker")
    return urls


def _children(args: argparse.Namespace) -> list[subprocess.Popen[str]]:
    """Start processes 2..P for their share of the gateways; this process keeps the first share.

    With several ``--broker`` URLs, process *k* gets URL ``k mod n`` (each process one node of a cluster;
    a process holds at most ~20,000 sockets where open files are capped so).
    """
    share = -(-args.gateways // args.processes)
    urls = _broker_urls(args.broker) if args.broker else []
    children = []
    for index in range(1, args.processes):
        first = index * share
        count = min(share, args.gateways - first)
        if count <= 0:
            break
        command = [sys.executable, "-m", "bmsgate", "fleet", "simulate", "--quiet", "--processes", "1"]
        command += ["--gateways", str(count), "--offset", str(args.offset + first), "--interval", str(args.interval)]
        command += ["--faults", str(args.faults), "--churn", str(args.churn)]
        for flag, value in (
            ("--broker", urls[index % len(urls)] if urls else None),
            ("--credentials-dir", args.credentials_dir),
            ("--username", args.username),
            ("--password", args.password),
            ("--duration", args.duration),
        ):
            if value is not None:
                command += [flag, str(value)]
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))  # noqa: S603 - ourselves
    args.gateways = min(share, args.gateways)
    if urls:
        args.broker = urls[0]
    return children


def _summed(summary: dict[str, Any], children: list[subprocess.Popen[str]]) -> dict[str, Any]:
    """This process's summary plus each child's last JSON line (a child that failed is named)."""
    total = dict(summary)
    failed = []
    for child in children:
        output, _ = child.communicate()
        lines = output.strip().splitlines()
        if child.returncode != 0 or not lines:
            failed.append(child.pid)
            continue
        for key, value in json.loads(lines[-1]).items():
            if key in ("seconds", "connect_s"):
                total[key] = max(total[key], value)
            else:
                total[key] = total.get(key, 0) + value
    if children:
        total["processes"] = 1 + len(children)
    if failed:
        total["failed_processes"] = failed
    return total


def _simulate(args: argparse.Namespace) -> int:
    from bmsgate.fleet.simulate import SimulationSettings, run_simulation  # noqa: PLC0415

    children = _children(args) if args.processes > 1 else []
    logins, credentials_url, ca_pem = _logins(args)
    urls = [urlsplit(url) for url in _broker_urls(args.broker or credentials_url or _DEFAULT_BROKER)]
    tls = None
    if urls[0].scheme == "mqtts":
        tls = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    default_port = 8883 if tls else 1883
    brokers = [(url.hostname or "", url.port or default_port) for url in urls]
    settings = SimulationSettings(
        logins=logins,
        interval_s=args.interval,
        host=brokers[0][0],
        port=brokers[0][1],
        more_brokers=brokers[1:],
        duration_s=args.duration,
        fault_ratio=args.faults,
        churn_ratio=args.churn,
        tls=tls,
    )

    def each_second(report: Any) -> None:
        sys.stdout.write(report.line() + "\n")
        sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        report = asyncio.run(run_simulation(settings, None if args.quiet else each_second))
        summary = {name: getattr(report, name) for name in report.__slots__ if name != "dropped_gateways"}
        total = _summed({"gateways": len(logins), **summary}, children)
        sys.stdout.write(json.dumps(total) + "\n")
        return 1 if "failed_processes" in total else 0
    return 0
