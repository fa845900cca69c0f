"""CAN output timing: frame-set period jitter and alarm reaction time, on python-can's virtual bus.

Jitter: a *real* run on the virtual bus with the period scaled down 10× (0.1 s instead of 1 s), so 30 s
of wall time are the 300 frame sets of a 5-minute run. Jitter is absolute scheduling error (ms), so it
is reported unscaled, and also as a share of the scaled period. Packs publish every 0.5 s meanwhile.

Reaction: period 1 s; a protection flag is published to the hub, and we time until the 0x359 frame
carrying it is received on the bus (the sink sends an extra frame set when things get less safe).

Run: .venv/bin/python benchmarks/can_jitter.py [--seconds 30] [--trials 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import statistics
import threading
import time

import can

from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.sink import CanSink
from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.settings import InverterSettings
from bmsgate.model import Alarm, BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub


def snapshot(alarms: frozenset[Alarm] = frozenset()) -> BatterySnapshot:
    return BatterySnapshot(
        battery_id="a",
        timestamp=time.time(),
        voltage=52.8,
        current=-12.3,
        soc=50.0,
        soh=98.0,
        full_capacity=100.0,
        remaining_capacity=50.0,
        cell_voltages=(3.3,) * 16,
        temperatures=(20.0, 22.0),
        charge_enabled=True,
        discharge_enabled=True,
        alarms=alarms,
    )


class Receiver:
    """The inverter side: timestamps every frame with perf_counter on arrival."""

    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.arrivals: list[tuple[float, int, bytes]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            message = self.bus.recv(0.01)
            if message is not None:
                with self.lock:
                    self.arrivals.append((time.perf_counter(), message.arbitration_id, bytes(message.data)))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.bus.shutdown()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def can_sink(channel: str, period: float) -> CanSink:
    controller = InverterController(InverterSettings(batteries=("a",)))
    return CanSink(CanSettings(interface="virtual", channel=channel, profile="pylon", period=period), controller)


async def run_sink(sink: CanSink, hub: SnapshotHub) -> list[asyncio.Task[None]]:
    # The controller first, as the gateway starts it: the first frames encode a computed status.
    return [asyncio.create_task(sink.controller.run(hub)), asyncio.create_task(sink.run(hub))]


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def jitter(seconds: float) -> None:
    period = 0.1
    channel = "bench-jitter"
    receiver = Receiver(channel)
    hub = SnapshotHub()
    hub.publish(snapshot())
    sink = can_sink(channel, period)
    task = await run_sink(sink, hub)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.5)
        hub.publish(snapshot())
    await stop(task)
    receiver.close()
    times = [t for t, frame_id, _ in receiver.arrivals if frame_id == 0x351]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    errors = [abs(gap - period) * 1000 for gap in gaps]
    print(f"frame-set period jitter: real {seconds:.0f} s run on the virtual bus, period scaled 1 s → {period} s")
    print(f"  frame sets: {len(times)} (= a {len(times) * 1.0 / 60:.1f}-minute run at 1 s)")
    print(
        f"  mean period: {statistics.fmean(gaps) * 1000:.3f} ms (drift {statistics.fmean(gaps) * 1000 - 100:+.3f} ms)"
    )
    print(
        f"  |period error|: p50 {percentile(errors, 0.5):.3f} ms, p99 {percentile(errors, 0.99):.3f} ms, "
        f"max {max(errors):.3f} ms (max = {max(errors) / (period * 1000) * 100:.1f} % of the scaled period)"
    )


async def reaction(trials: int) -> None:
    channel = "bench-reaction"
    receiver = Receiver(channel)
    hub = SnapshotHub()
    hub.publish(snapshot())
    sink = can_sink(channel, 1.0)
    task = await run_sink(sink, hub)
    await asyncio.sleep(0.3)
    delays = []
    for trial in range(trials):
        raised = trial % 2 == 0
        with receiver.lock:
            seen = len(receiver.arrivals)
        started = time.perf_counter()
        hub.publish(snapshot(frozenset({Alarm.CELL_OVERVOLTAGE}) if raised else frozenset()))
        while True:
            await asyncio.sleep(0.0005)
            with receiver.lock:
                hit = next(
                    (t for t, fid, data in receiver.arrivals[seen:] if fid == 0x359 and bool(data[0] & 0x02) == raised),
                    None,
                )
            if hit is not None:
                break
        if raised:
            delays.append((hit - started) * 1000)
        await asyncio.sleep(0.25 + 0.1 * (trial % 3))  # land at different phases of the 1 s period
    await stop(task)
    receiver.close()
    print(f"alarm reaction (hub publish → 0x359 with the protection bit received), {len(delays)} trials, period 1 s:")
    print(f"  p50 {percentile(delays, 0.5):.2f} ms, p99 {percentile(delays, 0.99):.2f} ms, max {max(delays):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="wall time of the jitter run")
    parser.add_argument("--trials", type=int, default=30, help="alarm flips (half of them raise the alarm)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the state-change log lines are not the figures
    asyncio.run(jitter(args.seconds))
    asyncio.run(reaction(args.trials))


if __name__ == "__main__":
    main()
