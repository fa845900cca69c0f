"""Decoded polls per second for every built-in protocol, through the public `bmsgate.protocols.decode` path.

One poll = every reply frame of one full poll (for JK: the streamed 300-byte cell-info frame, plus the
device-info frame that selects its layout), answered by the simulator for a 16-cell pack. Two figures per
protocol: frames as an assembler hands them over (checked already; what the client decodes), and raw
bytes (checked and decoded; what ``bmsgate decode`` does).
One core, best of nine half-second runs (the least disturbed run on a shared machine).

Run: .venv/bin/python benchmarks/decode_all.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from bmsgate.catalog import Kind, default_catalog
from bmsgate.protocols import Frame, decode, get_protocol
from bmsgate.runtime.simulation import PackConfig, PackModel, VirtualBms

JK_TARGET = 50_000
RUNS = 9  # best of several short runs: the least disturbed one on a shared, noisy VM


def _poll(name: str) -> tuple[list[bytes], list[Frame]]:
    protocol = get_protocol(name)
    pack = PackModel(PackConfig(cells=16, ntc_count=3))
    pack.advance(900.0)
    bms = VirtualBms(protocol, pack)
    raw: list[bytes] = []
    assembler = protocol.new_assembler()
    frames: list[Frame] = []
    for request in protocol.requests:
        if request.follows:
            continue  # its reply came with the request before it (the simulator sends both)
        # What goes on the wire (hex text for E&J-style framings); a listening request writes nothing and
        # takes what the BMS sends on its own.
        replies = (
            bms.handle_write(protocol.wire(request.frame)) if request.frame else bms.replies_for(request.reply or 0)
        )
        for reply in replies:
            found = assembler.feed(reply)
            frames += found
            raw += [frame.raw for frame in found]
    return raw, frames


def _rate(name: str, inputs: Sequence[bytes | Frame], seconds: float) -> float:
    protocol = get_protocol(name)
    for _ in range(1000):  # warm-up
        decode(protocol, inputs, battery_id="bench", timestamp=0.0)
    best = 0.0
    for _ in range(RUNS):
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for _ in range(500):
                decode(protocol, inputs, battery_id="bench", timestamp=0.0)
            count += 500
        best = max(best, count / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of each run")
    args = parser.parse_args()
    print(f"{'protocol':<10} {'frames':>6} {'assembled frames/s':>19} {'raw bytes/s':>12}  µs/poll (assembled)")
    for name in default_catalog().names(Kind.PROTOCOL):
        raw, frames = _poll(name)
        assembled = _rate(name, frames, args.seconds)
        checked = _rate(name, raw, args.seconds)
        print(f"{name:<10} {len(frames):>6} {assembled:>19,.0f} {checked:>12,.0f}  {1e6 / assembled:.1f}")
    print(f"target: JK at least {JK_TARGET:,} polls/s (assembled frames: device info + cell info)")


if __name__ == "__main__":
    main()
