"""Text replies assembled and decoded per second: Felicity's JSON object and Lithionics' CSV lines.

Each iteration feeds one poll's wire text (aiobmsble's captures, split into the notification size the
definition declares) through a fresh assembler — the JSON scan and bounded parse, or the line split and
column parse — and decodes the frames into one `BatterySnapshot`. A worst case for the JSON scan (an
object of `max_length` characters made of strings with braces and escapes, refused at the end) is timed
too. Runs on one core.

Run: .venv/bin/python benchmarks/text_replies.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.protocols.family_frames import FELICITY, LITHIONICS, FamilyCapture

from bmsgate.errors import BmsgateError
from bmsgate.protocols import CompiledProtocol, get_protocol

RUNS = 7  # best of several short runs: the least disturbed one on a shared, noisy VM


def _chunks(protocol: CompiledProtocol, capture: FamilyCapture) -> list[bytes]:
    size = protocol.definition.gatt.notification_size if protocol.definition.gatt else 20
    wire = b"".join(frame for frames in capture.replies.values() for frame in frames)
    return [wire[start : start + size] for start in range(0, len(wire), size)]


def _poll(protocol: CompiledProtocol, chunks: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        assembler = protocol.new_assembler()
        frames = [frame for chunk in chunks for frame in assembler.feed(chunk)]
        protocol.decode(frames, battery_id="bench", timestamp=0.0)

    return run


def _hostile(protocol: CompiledProtocol) -> Callable[[], None]:
    limit = protocol.definition.framing.max_length
    body = b'{"a":"}]\\"{[",' * (limit // 16)
    text = body[: limit - 8] + b'"z":1}'

    def run() -> None:
        assembler = protocol.new_assembler()
        for start in range(0, len(text), 35):
            if assembler.feed(text[start : start + 35]):
                raise BmsgateError("the worst-case text must not become a frame")
        if not assembler.stats.rejected:
            raise BmsgateError("the worst-case text must be refused")

    return run


def _best(run: Callable[[], None]) -> float:
    for _ in range(200):
        run()
    best = 0.0
    for _ in range(RUNS):
        count = 0
        started = time.perf_counter()
        while time.perf_counter() < started + 0.3:
            for _ in range(100):
                run()
            count += 100
        best = max(best, count / (time.perf_counter() - started))
    return best


def main() -> None:
    felicity, lithionics = get_protocol("felicity"), get_protocol("lithionics")
    cases = (
        ("felicity 16S JSON reply (802 chars, 35-byte chunks)", _poll(felicity, _chunks(felicity, FELICITY))),
        ("lithionics primary + status lines (20-byte chunks)", _poll(lithionics, _chunks(lithionics, LITHIONICS))),
        ("felicity worst-case JSON scan (4096 chars, refused)", _hostile(felicity)),
    )
    for label, run in cases:
        best = _best(run)
        print(f"{label}: {best:,.0f} polls/s ({1e6 / best:.1f} µs per poll)")


if __name__ == "__main__":
    main()
