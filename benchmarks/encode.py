"""What the simulated BMS spends per reply: the generated encoders against the field-by-field reference.

For each pack the demo simulates (JBD 16S, JK02 in both layouts, Daly), one state is encoded into every
reply its poll asks for, once through `CompiledProtocol.encode_reply` (generated payload encoder and
precomputed framing) and once through the step-by-step reference path it is tested against. Also timed:
the pack model's `advance` and `VirtualBms.state`, which every poll pays too. Best of several runs,
interleaved, on a shared and noisy VM.

Run: PYTHONPATH=src .venv/bin/python benchmarks/encode.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bmsgate.protocols import get_protocol
from bmsgate.runtime.simulation import PackConfig, PackModel, VirtualBms

RUNS = 7
CALLS = 2000

_CASES = (
    ("JBD 16S", "jbd", 16, None, (0x03, 0x04)),
    ("JK02 24S", "jk", 16, "jk02_24s", (0x02,)),
    ("JK02 32S", "jk", 16, "jk02_32s", (0x02,)),
    ("Daly 4S", "daly", 4, None, (0x12, 0x7C)),
)


def _best(function: Callable[[], object]) -> float:
    """µs per call, the best of `RUNS` runs of `CALLS` calls."""
    best = float("inf")
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(CALLS):
            function()
        best = min(best, (time.perf_counter() - started) / CALLS)
    return best * 1e6


def _measure(label: str, name: str, cells: int, variant: str | None, keys: tuple[int, ...]) -> None:
    protocol = get_protocol(name)
    pack = PackModel(PackConfig(cells=cells, ntc_count=2, seed=5))
    pack.advance(900.0)
    bms = VirtualBms(protocol, pack)
    state = bms.state()
    for key in keys:
        new = protocol.encode_reply(key, state, variant=variant)
        old = protocol._encode_reply_stepwise(key, state, variant=variant)
        assert new == old, f"{label} {key:#04x}: the generated encoder differs from the reference"

        def fast_path(key: int = key) -> bytes:
            return protocol.encode_reply(key, state, variant=variant)

        def reference(key: int = key) -> bytes:
            return protocol._encode_reply_stepwise(key, state, variant=variant)

        fast, slow = _best(fast_path), _best(reference)
        print(f"{label} reply {key:#04x}: {fast:6.1f} µs per reply (field by field {slow:6.1f} µs, {slow / fast:.1f}x)")
    advance = _best(lambda: pack.advance(2.0))
    replies = _best(lambda: bms.replies_for(keys[-1]))
    print(f"{label} pack: advance {advance:.1f} µs, state {_best(bms.state):.1f} µs, replies_for {replies:.1f} µs")


def main() -> None:
    for case in _CASES:
        _measure(*case)


if __name__ == "__main__":
    main()
