"""CPU per snapshot through every output: hub → Home Assistant payload → controller → Modbus → CAN.

8 simulated JBD 16S batteries form the inverter bank; every output is the real one, built through the
same wiring table as ``bmsgate run`` (Home Assistant over MQTT to a real local Mosquitto, a Modbus TCP
server, CAN on python-can's virtual bus, the plain console).

1. Per stage, in one process, on the same recorded snapshots (CPU time, ``time.process_time``):
   poll (simulated BMS + transport + poll session + decode; the simulator's own share measured apart),
   hub publish, the Home Assistant sink (hub update taken, state message and discovery built and
   JSON-encoded; publishes recorded instead of sent), the inverter controller (bank + limits), the
   Modbus register image, the CAN frame set. Every bank snapshot triggers one controller status, which
   Modbus and CAN each encode once, so the output stages add up to the pipeline's cost per snapshot.
2. End to end: the whole gateway running with every output (real MQTT publishes into Mosquitto) at
   8 × 4 polls/s: steady-state process CPU divided by the snapshots produced, with the simulator's
   share (from 1.) taken out for the gateway's.

Run: PYTHONPATH=src .venv/bin/python benchmarks/pipeline_outputs.py [--rounds 400] [--seconds 10] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from rich.console import Console

from bmsgate.app.config import config_from_mapping
from bmsgate.app.gateway import Gateway, build_gateway, run_gateway
from bmsgate.app.outputs import configured_sink_builders
from bmsgate.app.ports import free_tcp_port
from bmsgate.homeassistant.sink import HomeAssistantSink
from bmsgate.inverter.can.sink import CanSink
from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.modbus.sink import ModbusSink
from bmsgate.model import BatterySnapshot
from bmsgate.mqtt.broker import EmbeddedBroker, free_port
from bmsgate.transports.simulator import SimulatorTransport

if TYPE_CHECKING:
    from bmsgate.mqtt.client import MqttSession

BATTERIES = 8
TARGET_PIPELINE_MS = 0.3
_REGISTERS = "Modbus register image encode"
_FRAMES = "CAN frame set encode"


def _config(broker_url: str, state_dir: str, poll_interval: float) -> dict[str, Any]:
    batteries = [
        {
            "id": f"pack{index}",
            "protocol": "jbd",
            "poll_interval": poll_interval,
            "transport": {"type": "simulator", "cells": 16, "ntc_count": 3, "seed": index, "time_scale": 10},
        }
        for index in range(BATTERIES)
    ]
    return {
        "state_dir": state_dir,
        "batteries": batteries,
        "outputs": {
            "console": {"mode": "plain", "interval": 5},
            "mqtt": {"url": broker_url},
            "modbus": {"mode": "tcp", "host": "127.0.0.1", "port": free_tcp_port("127.0.0.1")},
            "can": {"interface": "virtual", "channel": "bmsgate-bench"},
        },
    }


def _gateway(broker_url: str, state_dir: str, poll_interval: float) -> Gateway:
    config = config_from_mapping(_config(broker_url, state_dir, poll_interval))
    return build_gateway(
        config, console=Console(file=io.StringIO(), width=200), sink_builders=configured_sink_builders()
    )


_T = TypeVar("_T")


def _sink(gateway: Gateway, kind: type[_T]) -> _T:
    return next(sink for sink in gateway.supervisor.sinks if isinstance(sink, kind))


class _RecordingSession:
    """Stands in for the MQTT session in the per-stage figures: keeps the last payload per topic."""

    def __init__(self) -> None:
        self.payloads: dict[str, str] = {}
        self.messages = 0

    async def publish(self, topic: str, payload: str, *, retain: bool = False, qos: int = 0) -> None:
        del retain, qos
        self.payloads[topic] = payload
        self.messages += 1


class _Stages:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.cpu[name] = self.cpu.get(name, 0.0) + seconds


async def _record_polls(gateway: Gateway, rounds: int, stages: _Stages) -> list[BatterySnapshot]:
    """Poll every battery `rounds` times (as fast as the simulator answers); CPU of the polls and of the simulator."""
    runtimes = list(gateway.supervisor.batteries.values())
    for runtime in runtimes:
        await runtime.client.connect()
    transports = [runtime.client.transport for runtime in runtimes]
    simulated = [transport for transport in transports if isinstance(transport, SimulatorTransport)]
    sim_cpu = 0.0
    # The simulator's own share: the same work its transport does per write, timed by wrapping the
    # pack model and the virtual BMS (they are plain objects, so this changes nothing else).
    for transport in simulated:
        bms = transport.bms
        pack = transport.pack
        original_write, original_advance = bms.handle_write, pack.advance

        def timed(function: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                nonlocal sim_cpu
                started = time.process_time()
                try:
                    return function(*args)
                finally:
                    sim_cpu += time.process_time() - started

            return call

        bms.handle_write = timed(original_write)  # type: ignore[method-assign]
        pack.advance = timed(original_advance)  # type: ignore[method-assign]
    snapshots: list[BatterySnapshot] = []
    started = time.process_time()
    for _ in range(rounds):
        for runtime in runtimes:
            snapshots.append(await runtime.client.read())
    stages.add("poll (total)", time.process_time() - started)
    stages.add("  of which simulated BMS", sim_cpu)
    for runtime in runtimes:
        await runtime.client.close()
    return snapshots


async def _stage_outputs(gateway: Gateway, snapshots: list[BatterySnapshot], stages: _Stages) -> int:
    """Feed recorded snapshots through hub and every output's encoder, each stage timed on its own."""
    hub = gateway.hub
    for runtime in gateway.supervisor.batteries.values():
        hub.register(runtime.battery_id, stale_after=runtime.stale_after)
    ha = _sink(gateway, HomeAssistantSink)
    controller = _sink(gateway, InverterController)
    modbus = _sink(gateway, ModbusSink)
    can = _sink(gateway, CanSink)
    session = _RecordingSession()
    ha._hub = hub
    # The subscribers the running gateway has: console, Home Assistant, the controller (and the agent, if any).
    ha_subscription = hub.subscribe(ha.name)
    controller_subscription = hub.subscribe(controller.name)
    console_subscription = hub.subscribe("console")
    clock = time.process_time
    for snapshot in snapshots:
        started = clock()
        hub.publish(snapshot)
        after_hub = clock()
        while (update := ha_subscription.get_nowait()) is not None:
            ha._apply(update)
        await ha._flush(cast("MqttSession", session))
        after_ha = clock()
        controller_subscription.get_nowait()
        controller.refresh(hub, fresh_data=True)
        after_controller = clock()
        # What each inverter output's status task does per status ...
        modbus._take_status()
        after_modbus = clock()
        can._take_status()
        can._less_safe_than_sent()
        after_can = clock()
        # ... and the encoding it defers to a register read / a frame set going out (timed on every
        # snapshot here, counted per read / per set below).
        modbus.refresh()
        after_registers = clock()
        can._encode_frames()
        after_frames = clock()
        can._sent_signature = can._signature()  # as if that set went out
        console_subscription.get_nowait()
        stages.add("hub publish", after_hub - started)
        stages.add("Home Assistant state + discovery (JSON)", after_ha - after_hub)
        stages.add("controller (bank + limits)", after_controller - after_ha)
        stages.add("Modbus: status taken", after_modbus - after_controller)
        stages.add("CAN: status, phase, urgency", after_can - after_modbus)
        stages.add(_REGISTERS, after_registers - after_can)
        stages.add(_FRAMES, after_frames - after_registers)
    for subscription in (ha_subscription, controller_subscription, console_subscription):
        subscription.close()
    if not can.frames or not session.payloads or modbus.status.sequence == 0:
        raise SystemExit("an output produced nothing: the figures would be meaningless")
    return session.messages


async def _per_stage(broker_url: str, rounds: int, profile: bool) -> float:
    """Print the per-stage figures; returns the simulated BMS's CPU per poll (ms)."""
    with tempfile.TemporaryDirectory() as state_dir:
        gateway = _gateway(broker_url, state_dir, 1.0)
        stages = _Stages()
        snapshots = await _record_polls(gateway, rounds, stages)
        # Warm-up: first discovery publication, compiled caches, first statuses.
        warm = _Stages()
        await _stage_outputs(gateway, snapshots[: BATTERIES * 5], warm)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        messages = await _stage_outputs(gateway, snapshots[BATTERIES * 5 :], stages)
        if profiler:
            profiler.disable()
        count = len(snapshots) - BATTERIES * 5
    polls = len(snapshots)
    print(f"per stage, {BATTERIES} × JBD 16S, {polls} polls recorded, {count} snapshots through the outputs:")
    per_status = 0.0
    for name, seconds in stages.cpu.items():
        if name in {_REGISTERS, _FRAMES}:
            continue
        per = seconds / (polls if name.startswith(("poll", "  of which")) else count) * 1000
        if not name.startswith(("poll", "  of which")):
            per_status += per
        print(f"  {name:<46} {per:7.4f} ms/snapshot")
    gateway_poll = (stages.cpu["poll (total)"] - stages.cpu["  of which simulated BMS"]) / polls * 1000
    print(f"  {'poll without the simulated BMS':<46} {gateway_poll:7.4f} ms/snapshot")
    registers = stages.cpu[_REGISTERS] / count * 1000
    frames = stages.cpu[_FRAMES] / count * 1000
    print(f"  {_REGISTERS:<46} {registers:7.4f} ms per read")
    print(f"  {_FRAMES:<46} {frames:7.4f} ms per set")
    # A bank of 8 packs polled every second: 8 snapshots/s; the inverter reads the map about once a
    # second and CAN sends one set a second (pylon's period).
    shared = (registers + frames) / BATTERIES
    print(
        "pipeline hub → HA payload → controller → Modbus registers → CAN frames: "
        f"{per_status + shared:.4f} ms/snapshot (target ≤ {TARGET_PIPELINE_MS} ms; 8 snapshots, 1 register read "
        f"and 1 frame set a second); {messages / count:.2f} MQTT messages/snapshot"
    )
    eager = per_status + registers + frames
    print(f"  encoding registers and frames on every snapshot instead: {eager:.4f} ms/snapshot")
    print(f"  with the poll (gateway share, no simulator): {per_status + shared + gateway_poll:.4f} ms/snapshot")
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
        print(text.getvalue())
    return stages.cpu["  of which simulated BMS"] / polls * 1000


async def _end_to_end(broker_url: str, seconds: float, simulator_ms: float) -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        gateway = _gateway(broker_url, state_dir, 0.25)
        ha = _sink(gateway, HomeAssistantSink)
        measured: dict[str, float] = {}

        def polls() -> int:
            return sum(
                runtime.client.stats.polls - runtime.client.stats.failures
                for runtime in gateway.supervisor.batteries.values()
            )

        async def measure() -> None:
            await asyncio.sleep(3.0)  # start-up, first discovery
            first, cpu, messages = polls(), time.process_time(), ha.stats.messages
            await asyncio.sleep(seconds)
            measured["snapshots"] = polls() - first
            measured["cpu"] = time.process_time() - cpu
            measured["messages"] = ha.stats.messages - messages

        task = asyncio.create_task(measure())
        await run_gateway(gateway, duration=seconds + 4.0)
        await task
    snapshots = max(measured["snapshots"], 1)
    per = measured["cpu"] / snapshots * 1000
    print(
        f"end to end, {BATTERIES} batteries × 4 polls/s, every output, real Mosquitto: "
        f"{measured['snapshots']:.0f} snapshots in {seconds:.0f} s, {per:.3f} ms CPU/snapshot, "
        f"{measured['messages'] / snapshots:.2f} MQTT publishes/snapshot"
    )
    print(f"  without the simulated BMS's own share ({simulator_ms:.3f} ms): {per - simulator_ms:.3f} ms/snapshot")


async def _main(args: argparse.Namespace) -> None:
    async with EmbeddedBroker(port=free_port()) as broker:
        simulator_ms = await _per_stage(broker.url, args.rounds, args.profile)
        await _end_to_end(broker.url, args.seconds, simulator_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=400, help="polls per battery recorded for the stages")
    parser.add_argument("--seconds", type=float, default=10.0, help="end-to-end measuring time")
    parser.add_argument("--profile", action="store_true", help="print a profile of the output stages")
    asyncio.run(_main(args=parser.parse_args()))


if __name__ == "__main__":
    main()
