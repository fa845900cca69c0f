"""CPU per battery snapshot of a running `bmsgate demo` / `bmsgate run` process, and its resident memory.

1. ``bmsgate demo`` on its embedded default (4 simulated batteries polled every 2 s, Home Assistant on
   an embedded Mosquitto, Modbus TCP, CAN on a virtual bus with a simulated inverter, the console in
   plain mode): the process's own CPU (utime + stime from /proc) over a steady-state window, divided by
   the snapshots its batteries produce in it (batteries × window / poll interval). Once without the
   fleet (the gateway) and, with ``--fleet``, with the demo's local fleet server and 30 simulated sites
   in the same process (their CPU is the fleet's, not the gateway's). The demo once more on a
   pseudo-terminal, where the console shows its live view (as `./scripts/demo` in a terminal does).
2. ``bmsgate run`` from a configuration file with 8 simulated batteries and every output (MQTT to a
   Mosquitto started here, Modbus TCP, CAN virtual bus, console): the same CPU figure and peak VmRSS.

With ``--py-spy SECONDS`` a py-spy profile (if py-spy is installed) of the demo process is printed.

With ``--split`` the plain demo runs twice at the same time, once with the simulated batteries' own CPU
accounted apart (benchmarks/simulator_share.py) and subtracted: the gateway's share, what it would cost beside
real batteries.

With ``--against OTHER/src`` the plain demo runs twice at the same time, once from these sources and once from
OTHER's (a worktree of the commit to compare with: ``git worktree add --detach /tmp/base <commit>``), and the
ratio is printed (first, then the usual figures; ``--only`` limits those): the figures drift with the machine's
load between runs, a ratio from one paired run does not.

Run: PYTHONPATH=src .venv/bin/python benchmarks/demo_cpu.py [--window 60] [--fleet] [--py-spy 20] [--against DIR]
     [--split]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import pty
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bmsgate.mqtt.broker import EmbeddedBroker, free_port

TARGET_DEMO_MS = 1.0
TARGET_RSS_MB = 50.0
_WARM_UP = 15.0
"""Seconds before the window opens: imports, definitions compiled, broker up, first discovery."""


def _cpu_seconds(pid: int) -> float:
    """The process's CPU time at ns resolution (Linux's CPU-time clock of a process; exited threads included).

    utime + stime count in clock ticks (10 ms): over a minute of the demo's 120 snapshots that is 0.08 ms
    per snapshot, a tenth of the target.
    """
    # clockid of a process's scheduler CPU clock (the kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)).
    return time.clock_gettime((~pid << 3) | 2)


def _simulated_seconds(pid: int, report: Path | None) -> float:
    """The simulated devices' CPU so far (benchmarks/simulator_share.py's running total; 0 without one).

    The process writes its total when asked (SIGUSR1), with a count that tells a fresh report from the last.
    """
    if report is None:
        return 0.0

    def read() -> tuple[int, float]:
        with contextlib.suppress(OSError, ValueError):
            count, seconds = report.read_text().split()
            return int(count), float(seconds)
        return 0, 0.0

    before = read()[0]
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        count, seconds = read()
        if count > before:
            return seconds
        time.sleep(0.01)
    raise SystemExit("the demo did not report its simulated batteries' CPU")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass


def _measure(
    command: list[str],
    window: float,
    snapshots_per_second: float,
    spy: float,
    *,
    terminal: bool = False,
    sources: str | None = None,
    share: Path | None = None,
) -> tuple[float, float]:
    """Run `command`; returns (CPU ms per snapshot over the window, peak RSS in MB).

    With `terminal` its output is a pseudo-terminal (drained here), so the console shows its live view.
    With `sources` the process imports bmsgate from that directory instead of this run's PYTHONPATH.
    With `share` (the report file of benchmarks/simulator_share.py) the simulated devices' CPU over the
    window is subtracted: the figure is the gateway's own.
    """
    with tempfile.TemporaryDirectory() as home:
        environment = {**os.environ, "HOME": home, "TERM": "xterm-256color" if terminal else "dumb"}
        # The process runs in a scratch directory: a relative PYTHONPATH (``src``) must still mean these sources.
        path = os.environ.get("PYTHONPATH", "") if sources is None else sources
        search = [str(Path(entry).resolve()) for entry in path.split(os.pathsep) if entry]
        environment["PYTHONPATH"] = os.pathsep.join(search)
        master, slave = pty.openpty() if terminal else (-1, subprocess.DEVNULL)
        if terminal:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 140, 0, 0))
            threading.Thread(target=_drain, args=(master,), daemon=True).start()
        process = subprocess.Popen(command, stdout=slave, stderr=slave, env=environment, cwd=home)
        if terminal:
            os.close(slave)
        try:
            peak = 0.0
            started = time.monotonic()
            while time.monotonic() - started < _WARM_UP:
                peak = max(peak, _rss_mb(process.pid))
                time.sleep(0.25)
            cpu_before, opened = _cpu_seconds(process.pid) - _simulated_seconds(process.pid, share), time.monotonic()
            if spy:
                _py_spy(process.pid, spy)
            while time.monotonic() - opened < window:
                peak = max(peak, _rss_mb(process.pid))
                time.sleep(0.25)
            cpu = _cpu_seconds(process.pid) - _simulated_seconds(process.pid, share) - cpu_before
            elapsed = time.monotonic() - opened
            if process.poll() is not None:
                raise SystemExit(f"{command[3]} ended early (exit {process.returncode}): no figure")
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if terminal:
                os.close(master)
    return cpu / (elapsed * snapshots_per_second) * 1000, peak


def _py_spy(pid: int, seconds: float) -> None:
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        print("  (py-spy is not installed: no profile)")
        return
    arguments = ["record", "--pid", str(pid), "--duration", str(int(seconds)), "--nonblocking", "--gil"]
    record = subprocess.run(
        [binary, *arguments, "--format", "raw", "-o", "/dev/stdout"],
        capture_output=True,
        text=True,
        check=False,
    )
    totals: dict[str, int] = {}
    for line in record.stdout.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        frames = stack.split(";")
        # The innermost frame: where the samples (threads holding the GIL) were.
        leaf = frames[-1] if frames else "?"
        totals[leaf] = totals.get(leaf, 0) + int(samples)
    total = sum(totals.values()) or 1
    print(f"  py-spy over {seconds:.0f} s, innermost frames by share of samples:")
    for name, count in sorted(totals.items(), key=lambda item: -item[1])[:25]:
        print(f"    {count / total:6.1%} {name}")


def _bmsgate() -> list[str]:
    return [sys.executable, "-m", "bmsgate.app.cli.main"]


_DEMO_BATTERIES, _DEMO_POLL_INTERVAL = 4, 2.0


def _demo_command(window: float, *, fleet: bool = False, live: bool = False) -> list[str]:
    command = [
        *_bmsgate(),
        "demo",
        *(() if live else ("--plain",)),
        "--duration",
        str(_WARM_UP + window + 30),
        "--mqtt-bind",
        f"127.0.0.1:{_free_tcp_port()}",
        "--modbus-tcp",
        f"127.0.0.1:{_free_tcp_port()}",
    ]
    if fleet:
        command += ["--fleet-http", f"127.0.0.1:{_free_tcp_port()}"]
    else:
        command.append("--no-fleet")
    return command


def _demo(window: float, fleet: bool, spy: float, *, live: bool = False) -> None:
    batteries, poll_interval = _DEMO_BATTERIES, _DEMO_POLL_INTERVAL
    command = _demo_command(window, fleet=fleet, live=live)
    per_snapshot, peak = _measure(command, window, batteries / poll_interval, spy, terminal=live)
    what = "with the fleet server and 30 simulated sites in-process" if fleet else "without the fleet"
    view = "live view on a 140×50 terminal" if live else "plain console"
    print(
        f"bmsgate demo ({batteries} batteries every {poll_interval:g} s, every output, {what}, {view}): "
        f"{per_snapshot:.3f} ms CPU per battery snapshot over {window:.0f} s (target ≤ {TARGET_DEMO_MS} ms); "
        f"peak RSS {peak:.1f} MB"
    )


def _at_once(jobs: dict[str, Callable[[], tuple[float, float]]], what: str) -> dict[str, tuple[float, float]]:
    """Run each measurement in a thread of its own at the same time (both see the same load); their results."""
    results: dict[str, tuple[float, float]] = {}

    def measure(name: str) -> None:
        results[name] = jobs[name]()

    threads = [threading.Thread(target=measure, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(results) != len(jobs):
        raise SystemExit(f"a demo ended early: no {what} figure")
    return results


def _demo_against(window: float, baseline: str) -> None:
    """The plain demo from these sources and from `baseline` at the same time: both see the same load."""
    rate = _DEMO_BATTERIES / _DEMO_POLL_INTERVAL
    sources = str(Path(baseline).resolve())
    results = _at_once(
        {
            "this": lambda: _measure(_demo_command(window), window, rate, 0.0),
            "baseline": lambda: _measure(_demo_command(window), window, rate, 0.0, sources=sources),
        },
        "paired",
    )
    this, base = results["this"][0], results["baseline"][0]
    print(
        f"bmsgate demo, paired over {window:.0f} s (plain console, without the fleet): "
        f"{this:.3f} ms CPU per battery snapshot here, {base:.3f} ms from {baseline}: "
        f"ratio {this / base:.2f} (target ≤ {TARGET_DEMO_MS} ms)"
    )


def _demo_split(window: float) -> None:
    """The plain demo twice at once: as it is, and with the simulated devices' CPU accounted apart."""
    rate = _DEMO_BATTERIES / _DEMO_POLL_INTERVAL
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "simulated-seconds"
        accounted = [sys.executable, str(Path(__file__).resolve().with_name("simulator_share.py")), str(report)]
        split = [*accounted, *_demo_command(window)[len(_bmsgate()) :]]
        results = _at_once(
            {
                "whole": lambda: _measure(_demo_command(window), window, rate, 0.0),
                "gateway": lambda: _measure(split, window, rate, 0.0, share=report),
            },
            "split",
        )
    whole, gateway = results["whole"][0], results["gateway"][0]
    print(
        f"bmsgate demo, split over {window:.0f} s (plain console, without the fleet): {whole:.3f} ms CPU per "
        f"battery snapshot in all; without the simulated batteries' own work (matching requests, the pack model, "
        f"encoding their replies and streams, measured apart in a second demo run at the same time) "
        f"{gateway:.3f} ms: the gateway's share, what it costs beside real batteries"
    )


async def _run(window: float, spy: float) -> None:
    batteries, poll_interval = 8, 1.0
    async with EmbeddedBroker(port=free_port()) as broker:
        with tempfile.TemporaryDirectory() as folder:
            config = {
                "state_dir": folder,
                "batteries": [
                    {
                        "id": f"pack{index}",
                        "protocol": "jbd",
                        "poll_interval": poll_interval,
                        "transport": {"type": "simulator", "cells": 16, "ntc_count": 3, "seed": index},
                    }
                    for index in range(batteries)
                ],
                "outputs": {
                    "console": {"mode": "plain", "interval": 10},
                    "mqtt": {"url": broker.url},
                    "modbus": {"mode": "tcp", "host": "127.0.0.1", "port": _free_tcp_port()},
                    "can": {"interface": "virtual", "channel": "bmsgate-bench"},
                },
            }
            path = Path(folder) / "config.yaml"
            path.write_text(yaml.safe_dump(config))
            command = [*_bmsgate(), "run", "-c", str(path), "--duration", str(_WARM_UP + window + 30)]
            per_snapshot, peak = await asyncio.to_thread(_measure, command, window, batteries / poll_interval, spy)
    print(
        f"bmsgate run ({batteries} batteries every {poll_interval:g} s; HA/MQTT, Modbus TCP, CAN virtual bus, "
        f"console): {per_snapshot:.3f} ms CPU per battery snapshot over {window:.0f} s; "
        f"peak RSS {peak:.1f} MB (target ≤ {TARGET_RSS_MB} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of steady state measured")
    parser.add_argument("--fleet", action="store_true", help="also measure the demo with its fleet")
    parser.add_argument("--py-spy", type=float, default=0.0, metavar="SECONDS", help="profile the demo with py-spy")
    parser.add_argument("--only", choices=("demo", "run"), help="measure one of them")
    parser.add_argument(
        "--against", metavar="SRC", help="also run the demo paired with another tree's sources (its src/)"
    )
    parser.add_argument(
        "--split", action="store_true", help="also measure the gateway's share without the simulated batteries"
    )
    args = parser.parse_args()
    if args.against:
        _demo_against(args.window, args.against)
    if args.split:
        _demo_split(args.window)
    if args.only != "run":
        _demo(args.window, fleet=False, spy=args.py_spy)
        _demo(args.window, fleet=False, spy=0.0, live=True)
        if args.fleet:
            _demo(args.window, fleet=True, spy=0.0)
    if args.only != "demo":
        asyncio.run(_run(args.window, args.py_spy if args.only == "run" else 0.0))


if __name__ == "__main__":
    main()
