"""Full JBD polls (0x03 + 0x04 replies, 16 cells) decoded per second through the public decode path.

Each iteration checks both raw frames (start/end markers, length, checksum) and decodes them into one
`BatterySnapshot`, exactly what `bmsgate decode` and the client do per poll. Runs on one core.

Run: .venv/bin/python benchmarks/decode.py
"""

from __future__ import annotations

import time

from bmsgate.protocols import decode, get_protocol
from bmsgate.runtime.simulation import PackConfig, PackModel

TARGET_PER_SECOND = 50_000
RUNS = 9  # best of several short runs: the least disturbed one on a shared, noisy VM


def main() -> None:
    jbd = get_protocol("jbd")
    pack = PackModel(PackConfig(cells=16, ntc_count=3))
    pack.advance(900.0)
    state = pack.state()
    frames = [jbd.encode_reply(0x03, state), jbd.encode_reply(0x04, state)]
    assembled = []
    assembler = jbd.new_assembler()
    for frame in frames:
        assembled += assembler.feed(frame)

    for label, inputs in (("raw bytes (checked + decoded)", frames), ("assembled frames (decode only)", assembled)):
        for _ in range(2000):  # warm-up
            decode(jbd, inputs, battery_id="bench", timestamp=0.0)
        best = 0.0
        for _ in range(RUNS):
            count = 0
            started = time.perf_counter()
            deadline = started + 0.5
            while time.perf_counter() < deadline:
                for _ in range(1000):
                    decode(jbd, inputs, battery_id="bench", timestamp=0.0)
                count += 1000
            best = max(best, count / (time.perf_counter() - started))
        print(f"JBD 16S poll, {label}: {best:,.0f} polls/s ({1e6 / best:.1f} µs per poll)")
    print(f"target: {TARGET_PER_SECOND:,} polls/s")


if __name__ == "__main__":
    main()
