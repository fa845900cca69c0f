"""Several simulated gateways in one process, each a real agent on its own session (the fleet demo's base)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmsgate.fleet.agent.simulated import SimulatedSite, demo_sites, run_sites
from bmsgate.fleet.credentials import GatewayCredentials
from bmsgate.fleet.protocol import Channel, StateMessage, TelemetryMessage
from tests.fleet.agent.conftest import GATEWAYS, FleetBroker, Recorder


def test_demo_sites_lie_in_south_africa_and_include_a_drift_and_a_fault() -> None:
    sites = demo_sites(30)
    assert len({site.gateway_id for site in sites}) == 30
    assert all(-35.5 < site.lat < -22 and 16 < site.lon < 33.5 for site in sites)
    assert [site.drift for site in sites].count(True) == 1
    assert [site.fault for site in sites].count(True) == 1
    assert demo_sites(30) == sites, "the same seed gives the same fleet"


@pytest.mark.slow
async def test_three_gateways_report_each_as_itself(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    sites = [
        SimulatedSite(gateway_id=gateway, name=f"Site {gateway}", lat=-30 + index, lon=25 + index, packs=index + 1)
        for index, gateway in enumerate(GATEWAYS)
    ]

    def credentials(site: SimulatedSite) -> GatewayCredentials:
        return fleet_broker.credentials(site.gateway_id)

    await run_sites(sites, credentials, tmp_path, interval=0.5, poll_interval=0.5, duration=3.0)
    for index, gateway in enumerate(GATEWAYS):
        state = recorder.of(Channel.STATE, gateway)[-1]
        assert isinstance(state, StateMessage)
        assert state.location is not None
        assert (state.location.lat, state.location.lon) == (-30 + index, 25 + index)
        telemetry = [m for m in recorder.of(Channel.TELEMETRY, gateway) if all(b.snapshot for b in m.batteries)]
        assert telemetry, f"{gateway} sent no full telemetry"
        last = telemetry[-1]
        assert isinstance(last, TelemetryMessage)
        assert len(last.batteries) == index + 1
        assert last.inverter is not None
    assert not recorder.rejected
