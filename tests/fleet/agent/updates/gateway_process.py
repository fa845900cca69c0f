"""A whole gateway process for the kill -9 tests: built from a configuration file exactly as ``bmsgate run`` does.

Usage: python gateway_process.py CONFIG [DESIRED_JSON ARTIFACTS_DIR]

With a desired state, the process installs it from the artifacts directory (the on-site installer's path)
once the gateway runs and the fleet agent is connected, reporting every phase to the broker.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bmsgate.app.config import load_config
from bmsgate.app.gateway import build_gateway, run_gateway
from bmsgate.app.outputs import configured_sink_builders
from bmsgate.fleet.agent.agent import FleetAgent
from bmsgate.fleet.agent.updates.engine import UpdateEngine
from bmsgate.fleet.agent.wiring import prepare_updates
from bmsgate.fleet.updates import DesiredState


async def _install(agent: FleetAgent, desired: DesiredState, artifacts: Path) -> None:
    await agent.connected.wait()
    engine = agent.desired_handler
    assert isinstance(engine, UpdateEngine)
    await engine.install_local(desired, artifacts, agent.report_update)


async def main(config_path: Path, desired_path: Path | None, artifacts: Path | None) -> None:
    config = load_config(config_path)
    prepare_updates(config)
    gateway = build_gateway(config, sink_builders=configured_sink_builders())
    agent = next(sink for sink in gateway.supervisor.sinks if isinstance(sink, FleetAgent))
    print("started", flush=True)
    async with asyncio.TaskGroup() as group:
        runner = group.create_task(run_gateway(gateway))
        if desired_path is not None and artifacts is not None:
            desired = DesiredState.model_validate_json(desired_path.read_bytes())
            group.create_task(_install(agent, desired, artifacts))
        await runner


if __name__ == "__main__":
    extra = sys.argv[2:4]
    asyncio.run(main(Path(sys.argv[1]), Path(extra[0]) if extra else None, Path(extra[1]) if len(extra) > 1 else None))
