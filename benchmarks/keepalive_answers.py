"""Keep-alive answers (``gatt.answer_notify``): the cost of a notification and the writes a flooding board gets.

Two figures per answer kind (echo, toggle), with a writer that takes 2 ms per write (a BLE write with
response over a good link is a few ms):

- the CPU time of the notification callback per notification while the board floods (the event loop's share
  of a flood: a flood cannot queue work, only replace the one waiting answer);
- the answers written per second during a flood of `--rate` notifications a second for `--seconds` seconds,
  against the bound of ``1 / MIN_ANSWER_INTERVAL`` a second.

Run: .venv/bin/python benchmarks/keepalive_answers.py [--seconds 3] [--rate 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bmsgate.protocols.definition import NotificationAnswer
from bmsgate.transports.answers import MIN_ANSWER_INTERVAL, NotificationAnswerer

_ANSWERS = {
    "echo": {"characteristic": "000a", "write_to": "0009", "answer": "echo"},
    "toggle": {"characteristic": "0004", "write_to": "0003", "answer": "toggle", "first": "FF", "flip": "20"},
}


async def _flood(kind: str, seconds: float, rate: int) -> tuple[float, float, int]:
    written = 0

    async def write(_answer: bytes) -> None:
        nonlocal written
        await asyncio.sleep(0.002)
        written += 1

    answerer = NotificationAnswerer(NotificationAnswer.model_validate(_ANSWERS[kind]), write, label=kind)
    answerer.start()
    batch = max(1, rate // 100)  # notifications arrive in bursts every 10 ms
    chunk = bytearray(b"\x9b\x00")
    callback_time = 0.0
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        before = time.perf_counter()
        for _ in range(batch):
            answerer.on_notify(None, chunk)
        callback_time += time.perf_counter() - before
        sent += batch
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await answerer.stop()
    return callback_time / sent * 1e6, written / elapsed, sent


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=20_000, help="notifications per second the board sends")
    args = parser.parse_args()
    print(f"bound: {1 / MIN_ANSWER_INTERVAL:.0f} answers/s per characteristic")
    for kind in _ANSWERS:
        per_notification, answers_per_second, notifications = asyncio.run(_flood(kind, args.seconds, args.rate))
        print(
            f"{kind:6s}: {notifications} notifications in {args.seconds:g} s; callback {per_notification:.2f} µs "
            f"per notification; {answers_per_second:.1f} answers/s written"
        )


if __name__ == "__main__":
    main()
