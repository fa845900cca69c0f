"""The gateway side of the fleet: telemetry uplink, location, offline buffer, commands (docs/fleet/agent.md).

:class:`FleetAgent` is an output like any other (``outputs.fleet`` in the configuration file); it can also be
built without one from :class:`AgentOptions` (the fleet demo runs many in one process).
"""

from bmsgate.fleet.agent.agent import AgentOptions, AgentStats, DesiredStateHandler, FleetAgent
from bmsgate.fleet.agent.settings import FleetSettings

__all__ = ["AgentOptions", "AgentStats", "DesiredStateHandler", "FleetAgent", "FleetSettings"]
