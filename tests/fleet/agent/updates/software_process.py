"""The first start of a gateway in the A/B software tests: ``bmsgate run`` plus an on-site install of a desired state.

Usage: <venv>/bin/python software_process.py CONFIG DESIRED_JSON ARTIFACTS_DIR

Run by the venv's own interpreter (it imports the bmsgate installed there, nothing from the tests). It
builds and runs the gateway exactly as ``bmsgate run`` does, and once the fleet agent is connected hands
the desired state (naming a software wheel under ARTIFACTS_DIR) to the update engine. It exits with the
status ``bmsgate run`` would (75 after a software switch). Later starts are ``bmsgate run`` itself.
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
from bmsgate.fleet.agent.updates.software import RESTART
from bmsgate.fleet.agent.wiring import prepare_updates
from bmsgate.fleet.updates import DesiredState


async def _install(agent: FleetAgent, desired: DesiredState, artifacts: Path) -> None:
    await agent.connected.wait()
    engine = agent.desired_handler
    assert isinstance(engine, UpdateEngine)
    await engine.install_local(desired, artifacts, agent.report_update)


async def main(config_path: Path, desired_path: Path, artifacts: Path) -> None:
    config = load_config(config_path)
    prepare_updates(config)
    gateway = build_gateway(config, sink_builders=configured_sink_builders())
    agent = next(sink for sink in gateway.supervisor.sinks if isinstance(sink, FleetAgent))
    desired = DesiredState.model_validate_json(desired_path.read_bytes())
    installing = asyncio.create_task(_install(agent, desired, artifacts))
    await run_gateway(gateway)
    installing.cancel()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
    sys.exit(RESTART.exit_code())
