"""A simulated fleet: thousands of gateways speaking the real agent protocol over raw MQTT 3.1.1 sockets.

:func:`run_simulation` drives them (:mod:`.fleet`); :mod:`.messages` builds their valid messages once per
gateway; :mod:`.wire` is the handful of MQTT packets they need. Used by ``bmsgate fleet simulate`` and the
ingest benchmark.
"""

from __future__ import annotations

from bmsgate.fleet.simulate.fleet import GatewayLogin, SimulationReport, SimulationSettings, run_simulation
from bmsgate.fleet.simulate.messages import GatewayTemplate, build_template
from bmsgate.fleet.simulate.wire import SimulationError

__all__ = [
    "GatewayLogin",
    "GatewayTemplate",
    "SimulationError",
    "SimulationReport",
    "SimulationSettings",
    "build_template",
    "run_simulation",
]
