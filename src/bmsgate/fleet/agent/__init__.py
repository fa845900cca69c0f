"""The gateway side of the fleet: telemetry uplink, location, offline buffer, commands (docs/fleet/agent.md).

:class:`~bmsgate.fleet.agent.agent.FleetAgent` is an output like any other (``outputs.fleet`` in the
configuration file, wired by :mod:`bmsgate.fleet.agent.wiring`); it can also be built without one from
:class:`~bmsgate.fleet.agent.agent.AgentOptions` (:mod:`bmsgate.fleet.agent.simulated` runs many in one
process). Nothing is imported here: the configuration loads only the settings module.
"""
