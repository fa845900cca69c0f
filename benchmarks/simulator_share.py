"""Run ``bmsgate`` with the simulated devices' CPU accounted apart (used by benchmarks/demo_cpu.py ``--split``).

The demo's batteries are simulated in the gateway's own process: the simulated BMS answering a request
(matching it, advancing the pack model, encoding its reply frames), a streaming pack encoding its frames, and
the faults shaping them. On a real installation that work happens in the batteries. This wraps those
entry points (all synchronous, none nested in another) with the calling thread's CPU clock and writes the
running total, in seconds, to a file when the process gets SIGUSR1 (no thread of its own, whose wake-ups
would cost the process more than what is measured), so that the benchmark can subtract it from the
process's CPU over the same window. What the gateway does with the bytes (the transport's queue, framing,
decoding) is not in it; neither is the simulated CAN inverter's one frame a second, which stays in the gateway's
share.

Run: PYTHONPATH=src .venv/bin/python benchmarks/simulator_share.py REPORT_FILE demo --plain ...
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from bmsgate.runtime.simulation import PackModel, VirtualBms
from bmsgate.transports.simulator import SimulatorTransport

_SIMULATED: tuple[tuple[type, str], ...] = (
    (VirtualBms, "handle_write"),
    (VirtualBms, "stream"),
    (PackModel, "advance"),
    (SimulatorTransport, "_shape"),
)
_spent_ns = 0
_reports = 0


def _accounted(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*arguments: Any, **keywords: Any) -> Any:
        global _spent_ns
        started = time.thread_time_ns()
        try:
            return function(*arguments, **keywords)
        finally:
            _spent_ns += time.thread_time_ns() - started

    return wrapper


def _reporter(path: Path) -> Callable[[int, FrameType | None], None]:
    def report(_signal: int, _frame: FrameType | None) -> None:
        global _reports
        _reports += 1
        # The count first: the reader waits for a new one, so it never takes an older total for this one.
        path.write_text(f"{_reports} {_spent_ns / 1e9:.9f}\n")

    return report


def main() -> None:
    report, *arguments = sys.argv[1:]
    for owner, name in _SIMULATED:
        setattr(owner, name, _accounted(getattr(owner, name)))
    signal.signal(signal.SIGUSR1, _reporter(Path(report)))
    sys.argv = ["bmsgate", *arguments]
    from bmsgate.app.cli.main import main as bmsgate_main

    sys.exit(bmsgate_main())


if __name__ == "__main__":
    main()
