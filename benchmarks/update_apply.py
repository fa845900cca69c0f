"""What applying a pack costs on the gateway, step by step, with the real engine and a simulated gateway.

Figures (median of several runs, milliseconds):

* journal write: one atomic replace of the update journal (temporary file, fsync, rename, fsync of the folder);
* stage: install a pack set (a protocol definition and a register map) into a new slot and load + compile
  every item from there (``validate_installed``);
* plan: compare the running catalog with the new one and build the live changes;
* switch: the supervisor's live changes (a protocol at the battery's poll boundary, the Modbus map at once);
* whole update: ``install_local`` from the desired state to ``committed``, with the health check set to its
  minimum (1 good poll, no minimum duration): everything but the waiting the health check does by design.

Run: .venv/bin/python benchmarks/update_apply.py [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bmsgate.app.config import config_from_mapping
from bmsgate.app.gateway import build_gateway
from bmsgate.app.outputs import build_outputs
from bmsgate.app.ports import free_tcp_port
from bmsgate.catalog import BUILTIN_DIR, Catalog, set_default_catalog
from bmsgate.fleet.agent.updates.engine import EngineSettings, UpdateEngine
from bmsgate.fleet.agent.updates.health import HealthSettings
from bmsgate.fleet.agent.updates.journal import Journal, write_journal
from bmsgate.fleet.agent.updates.plan import plan_activation
from bmsgate.fleet.agent.updates.slots import SlotStore
from bmsgate.fleet.agent.wiring import running_site
from bmsgate.fleet.updates import DesiredState, PackTarget, ReportedState, UpdatePhase
from bmsgate.packs.bundle import build_pack, pack_file_name, pack_sha256, read_pack


def _pack(directory: Path, version: str) -> tuple[PackTarget, bytes]:
    source = directory / f"source-{version}"
    (source / "protocols").mkdir(parents=True)
    (source / "modbus").mkdir()
    jbd = (BUILTIN_DIR / "protocols" / "jbd.yaml").read_text(encoding="utf-8")
    # Another identity for the same decoding: a changed description.
    (source / "protocols" / "jbd.yaml").write_text(
        jbd.replace("title: JBD / Jiabaida", f"title: JBD {version} / Jiabaida"), encoding="utf-8"
    )
    generic = (BUILTIN_DIR / "modbus" / "generic.yaml").read_text(encoding="utf-8")
    (source / "modbus" / "generic.yaml").write_text(
        generic.replace("name: generic\n", f"name: generic\nversion: '{version}'\n", 1), encoding="utf-8"
    )
    (source / "pack.yaml").write_text(f'name: bench\nversion: "{version}"\n', encoding="utf-8")
    manifest, data = build_pack(source)
    (directory / "packs").mkdir(exist_ok=True)
    (directory / "packs" / pack_file_name(manifest)).write_bytes(data)
    target = PackTarget(
        pack="bench",
        version=version,
        target=f"packs/{pack_file_name(manifest)}",
        length=len(data),
        sha256=pack_sha256(data),
    )
    return target, data


def _median_ms(samples: list[float]) -> str:
    return (
        f"{statistics.median(samples) * 1000:8.1f} ms  (min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})"
    )


def _timed(action: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


async def _gateway_runs(directory: Path, runs: int) -> tuple[list[float], list[float]]:
    config = config_from_mapping(
        {
            "name": "bench",
            "state_dir": str(directory / "state"),
            "batteries": [{"id": "house", "protocol": "jbd", "poll_interval": 0.2, "transport": {"type": "simulator"}}],
            "inverter": {"refresh_interval": 0.1},
            "outputs": {"console": {"enabled": False}, "modbus": {"host": "127.0.0.1", "port": free_tcp_port()}},
        }
    )
    set_default_catalog(None)
    gateway = build_gateway(config)
    assert config.outputs.modbus is not None
    wiring = build_outputs({"modbus": config.outputs.modbus}, config, gateway.supervisor, gateway.protocols)
    gateway.supervisor.sinks.extend(wiring.sinks)
    assert wiring.context.controller is not None
    engine = UpdateEngine(
        EngineSettings(
            directory=directory / "state" / "packs",
            gateway_id="bench",
            hardware="bench",
            health=HealthSettings(polls=1, min_duration=0.0),
        ),
        gateway.supervisor,
        running_site(config, wiring.context.controller.settings.batteries),
    )
    task = asyncio.create_task(gateway.supervisor.run())
    switch: list[float] = []
    whole: list[float] = []
    try:
        with gateway.hub.subscribe("bench", replay=False) as first_poll:
            await asyncio.wait_for(first_poll.get(), 10)
        for run in range(runs):
            target, _ = _pack(directory, f"{run + 1}")
            now = time.time()
            desired = DesiredState(
                v=1, gateway="bench", generation=run + 1, issued_at=now, expires_at=now + 600, packs=(target,)
            )
            marks: dict[UpdatePhase, float] = {}

            def report(state: ReportedState, marks: dict[UpdatePhase, float] = marks) -> None:
                marks.setdefault(state.phase, time.perf_counter())

            started = time.perf_counter()
            await engine.install_local(desired, directory, report)
            assert UpdatePhase.COMMITTED in marks, marks
            whole.append(time.perf_counter() - started)
            switch.append(marks[UpdatePhase.ACTIVE_PENDING] - marks[UpdatePhase.STAGED])
    finally:
        gateway.supervisor.request_stop()
        await task
        set_default_catalog(None)
    return switch, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bmsgate-bench-") as scratch:
        directory = Path(scratch)
        journal = Journal(generation=7, phase=UpdatePhase.ACTIVE_PENDING)
        journal_times = _timed(lambda: write_journal(directory / "journal", journal), args.runs * 3)
        target, data = _pack(directory, "0")
        pack = read_pack(data)
        store = SlotStore(directory / "slots-bench")
        counter = iter(range(1, 10_000))
        stage_times = _timed(lambda: store.install(next(counter), [pack], ()), args.runs)
        record = store.install(next(counter), [pack], ())
        site = running_site(
            config_from_mapping({"batteries": [{"id": "house", "protocol": "jbd", "transport": {"type": "simulator"}}]})
        )
        new = store.catalog(record)
        plan_times = _timed(lambda: plan_activation(site, Catalog(), new), args.runs)
        switch, whole = asyncio.run(_gateway_runs(directory / "gateway", args.runs))
    print(f"pack: {len(data)} bytes ({target.target}: a protocol definition and a register map)")
    print(f"journal write  {_median_ms(journal_times)}")
    print(f"stage          {_median_ms(stage_times)}")
    print(f"plan           {_median_ms(plan_times)}")
    print(f"switch         {_median_ms(switch)}   (staged -> active-pending: protocol at a poll boundary + map)")
    print(f"whole update   {_median_ms(whole)}   (desired -> committed, health check at its minimum)")


if __name__ == "__main__":
    main()
