"""CPU of the Home Assistant state path: µs per state message built and per MQTT publish.

1. State build: 8 simulated JBD 16S batteries (3 NTCs) are polled through the real gateway wiring; their
   snapshots go through the sink (rows announced as in ``bmsgate run``), then each battery's state message
   is built and JSON-encoded by the row-by-row reference (:func:`build_state` + ``json.dumps``) and by the
   compiled :class:`StatePlan` + :func:`encode_payload`, alternately, on the same snapshots. The payloads
   are compared byte for byte.
2. Publish: one ~900-byte retained state at a time through :class:`MqttSession` into a real local
   Mosquitto, at QoS 1 (each publish waits for its PUBACK) and QoS 0 (what the sink uses for most
   states, see docs/home-assistant.md "QoS"): back to back, and one every 10 ms on an otherwise idle
   loop, as in the demo.

Run: PYTHONPATH=src .venv/bin/python benchmarks/ha_state.py [--rounds 50] [--repeat 20] [--publishes 2000]
     [--isolated 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pipeline_outputs import _gateway, _record_polls, _sink, _Stages
from bmsgate.homeassistant.discovery import encode_payload
from bmsgate.homeassistant.entities import StateInputs, build_state
from bmsgate.homeassistant.sink import HomeAssistantSink
from bmsgate.homeassistant.state import StatePlan
from bmsgate.mqtt import client as mqtt
from bmsgate.mqtt.broker import EmbeddedBroker, free_port
from bmsgate.mqtt.settings import BrokerSettings
from bmsgate.runtime.hub import HubUpdate


def _old_payload(rows: list, inputs: StateInputs) -> str:  # type: ignore[type-arg]
    # The path before the plan: row by row, and json.dumps building an encoder per call.
    state = build_state(rows, inputs)
    return json.dumps(state, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)


async def _states(rounds: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        gateway = _gateway("mqtt://127.0.0.1:1", state_dir, 1.0)  # never connects: only the builders run
        snapshots = await _record_polls(gateway, rounds, _Stages())
        ha = _sink(gateway, HomeAssistantSink)
        cases: list[tuple[list, StatePlan, StateInputs]] = []  # type: ignore[type-arg]
        battery_ids = [runtime.battery_id for runtime in gateway.supervisor.batteries.values()]
        for index, snapshot in enumerate(snapshots):
            battery = ha._battery(battery_ids[index % len(battery_ids)])
            ha._apply(HubUpdate(battery.info.battery_id, snapshot, False, 0.0))
            cases.append((list(battery.rows.values()), StatePlan(battery.rows.values()), ha._inputs(battery)))
    for rows, plan, inputs in cases:
        if _old_payload(rows, inputs) != encode_payload(plan.build(inputs)):
            raise SystemExit("the plan's payload differs from the reference: the figures would be meaningless")
    clock = time.process_time
    old = new = 0.0
    for _ in range(repeat):
        started = clock()
        for rows, _plan, inputs in cases:
            _old_payload(rows, inputs)
        middle = clock()
        for _rows, plan, inputs in cases:
            encode_payload(plan.build(inputs))
        old += middle - started
        new += clock() - middle
    count = len(cases) * repeat
    build_old = build_new = 0.0
    for _ in range(repeat):
        started = clock()
        for rows, _plan, inputs in cases:
            build_state(rows, inputs)
        middle = clock()
        for _rows, plan, inputs in cases:
            plan.build(inputs)
        build_old += middle - started
        build_new += clock() - middle
    rows_per_state = len(cases[0][0])
    print(f"state message, {rows_per_state} rows, {count} builds (8 × JBD 16S, same snapshots, payloads identical):")
    print(
        f"  build only:   reference {build_old / count * 1e6:6.1f} µs, plan {build_new / count * 1e6:6.1f} µs "
        f"({build_old / build_new:.1f}×)"
    )
    print(f"  build + JSON: reference {old / count * 1e6:6.1f} µs, plan {new / count * 1e6:6.1f} µs ({old / new:.1f}×)")


async def _publishes(count: int, isolated: int) -> None:
    payload = "x" * 900
    async with EmbeddedBroker(port=free_port()) as broker:
        settings = BrokerSettings(url=broker.url)
        async with mqtt.connect(settings, will_topic="bench/availability", will_payload="offline") as session:
            print(f"publish through MqttSession into {broker.kind} (900 B, retained), CPU each:")
            for qos in (1, 0):
                for _ in range(50):  # warm-up
                    await session.publish("bench/state", payload, retain=True, qos=qos)
                started = time.process_time()
                for _ in range(count):
                    await session.publish("bench/state", payload, retain=True, qos=qos)
                per = (time.process_time() - started) / count * 1e6
                print(f"  QoS {qos}, back to back:                 {per:6.1f} µs")
            # As in the demo: one publish on an otherwise idle loop (cold caches, the broker asleep). The
            # loop's own wake-up for the pause is measured apart and taken out.
            started = time.process_time()
            for _ in range(isolated):
                await asyncio.sleep(0.01)
            pause = time.process_time() - started
            for qos in (1, 0):
                started = time.process_time()
                for _ in range(isolated):
                    await session.publish("bench/state", payload, retain=True, qos=qos)
                    await asyncio.sleep(0.01)
                per = (time.process_time() - started - pause) / isolated * 1e6
                print(f"  QoS {qos}, one every 10 ms (idle between): {per:6.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50, help="polls per battery recorded")
    parser.add_argument("--repeat", type=int, default=20, help="passes over the recorded snapshots")
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument("--isolated", type=int, default=300, help="publishes with a pause between")
    args = parser.parse_args()
    asyncio.run(_states(args.rounds, args.repeat))
    asyncio.run(_publishes(args.publishes, args.isolated))


if __name__ == "__main__":
    main()
