"""Demo sites: valid gateway ids, unique, inside South Africa, deterministic, every town used."""

from __future__ import annotations

from bmsgate.fleet.agent.simulated import demo_sites
from bmsgate.fleet.protocol import is_gateway_id
from bmsgate.fleet.sites import SOUTH_AFRICAN_TOWNS


def test_sites_are_unique_valid_and_in_south_africa() -> None:
    sites = demo_sites(200, prefix="za")
    assert len({site.gateway_id for site in sites}) == 200
    for site in sites:
        assert is_gateway_id(site.gateway_id)
        assert -35.0 < site.lat < -22.0
        assert 16.0 < site.lon < 33.0
    assert demo_sites(200, prefix="za") == sites
    assert {site.name.rsplit(" ", 1)[0] for site in sites} == {town for town, *_ in SOUTH_AFRICAN_TOWNS}
    assert [site for site in sites if site.drift] and [site for site in sites if site.fault]
