"""Many simulated gateways in one process, for ``bmsgate fleet demo`` and load tests.

Each site is a real gateway (supervisor, hub, simulated BMS packs spoken to through their protocol, the
inverter controller) with a real :class:`FleetAgent` on its own MQTT session, buffer and fixed location.
:func:`demo_sites` spreads sites over South Africa's towns; one pack in the fleet drifts a cell, one
develops an over-temperature fault, so the dashboard has something to show.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from bmsgate.app.config import config_from_mapping
from bmsgate.app.gateway import build_gateway
from bmsgate.fleet.agent.agent import AgentOptions, FleetAgent
from bmsgate.fleet.agent.location import FixedLocation
from bmsgate.fleet.agent.wiring import broker_settings
from bmsgate.fleet.credentials import GatewayCredentials
from bmsgate.fleet.protocol import BatteryDescriptor
from bmsgate.fleet.sites import SOUTH_AFRICAN_TOWNS
from bmsgate.inverter.controller import InverterController
from bmsgate.runtime.supervisor import Supervisor

__all__ = ["SimulatedSite", "build_site", "demo_sites", "run_sites"]

_KM_PER_DEGREE: Final = 111.32


@dataclasses.dataclass(frozen=True, slots=True)
class SimulatedSite:
    """One simulated installation."""

    gateway_id: str
    name: str
    lat: float
    lon: float
    packs: int = 2
    cells: int = 16
    drift: bool = False
    """One pack has a cell drifting away from the others."""
    fault: bool = False
    """One pack develops an over-temperature fault after a while."""
    fault_after_s: float = 60.0
    """Real seconds until that fault (the demo's minute; a test's few seconds)."""
    tags: tuple[str, ...] = ()


def demo_sites(count: int, *, seed: int = 7, prefix: str = "site") -> list[SimulatedSite]:
    """`count` sites around South African towns (big towns first, each site a few km from its town centre).

    The second drifts a cell, the third develops a fault. Deterministic for a seed, so the map looks the
    same every run.
    """
    rng = random.Random(seed)
    sites = []
    for index in range(count):
        town, _province, lat, lon = SOUTH_AFRICAN_TOWNS[index % len(SOUTH_AFRICAN_TOWNS)]
        distance_km = rng.uniform(0.5, 6.0)
        bearing = rng.uniform(0, 2 * math.pi)
        sites.append(
            SimulatedSite(
                gateway_id=f"{prefix}-{index + 1:03d}",
                name=f"{town} {index // len(SOUTH_AFRICAN_TOWNS) + 1}",
                lat=round(lat + distance_km * math.cos(bearing) / _KM_PER_DEGREE, 5),
                lon=round(lon + distance_km * math.sin(bearing) / (_KM_PER_DEGREE * math.cos(math.radians(lat))), 5),
                packs=rng.choice((1, 2, 2, 3)),
                cells=rng.choice((16, 16, 8)),
                drift=index == 1,
                fault=index == 2,
                tags=(town.lower().replace(" ", "-"),),
            )
        )
    return sites


def _site_config(site: SimulatedSite, state_dir: Path, *, time_scale: float, poll_interval: float) -> dict[str, Any]:
    batteries = []
    # crc32, not hash(): the same site must simulate the same packs in every process.
    base = zlib.crc32(site.gateway_id.encode())
    for index in range(site.packs):
        transport: dict[str, Any] = {
            "type": "simulator",
            "cells": site.cells,
            "capacity": 200 + 40 * index,
            "initial_soc": 40 + (base + 17 * index) % 55,
            "time_scale": time_scale,
            "seed": (base + index) % 10_000,
        }
        if site.drift and index == 0:
            transport.update(drift_cell=min(5, site.cells), drift_rate=25.0)
        if site.fault and index == 0:
            transport.update(fault="overtemperature", fault_after=site.fault_after_s * time_scale)
        batteries.append(
            {
                "id": f"pack{index + 1}",
                "name": f"Pack {index + 1}",
                "protocol": "jbd",
                "poll_interval": poll_interval,
                "stale_after": max(30.0, 5 * poll_interval),
                "transport": transport,
            }
        )
    return {
        "name": site.name,
        "state_dir": str(state_dir / site.gateway_id),
        "batteries": batteries,
        "outputs": {"console": {"enabled": False}},
    }


def build_site(
    site: SimulatedSite,
    credentials: GatewayCredentials,
    state_dir: Path,
    *,
    interval: float = 10.0,
    time_scale: float = 30.0,
    poll_interval: float = 5.0,
) -> tuple[Supervisor, FleetAgent]:
    """One simulated gateway with its agent (nothing runs yet).

    Raises:
        ConfigError: the simulated configuration is invalid (a bug) or a protocol is missing.
    """
    config = config_from_mapping(
        _site_config(site, state_dir, time_scale=time_scale, poll_interval=poll_interval), source=site.gateway_id
    )
    known = tuple(battery.id for battery in config.batteries)
    controller = InverterController(config.inverter.model_copy(update={"batteries": known}))
    channel = controller.channel
    options = AgentOptions(
        gateway_id=credentials.gateway,
        broker=broker_settings(credentials, reconnect_max=30.0),
        buffer_path=state_dir / site.gateway_id / "fleet-buffer.sqlite",
        interval=interval,
        name=site.name,
        site=site.name,
        tags=site.tags,
        batteries=tuple(BatteryDescriptor(id=b.id, name=b.display_name, protocol=b.protocol) for b in config.batteries),
        hardware="simulated gateway",
    )
    agent = FleetAgent(
        options,
        location=FixedLocation(site.lat, site.lon),
        inverter_status=lambda: channel.latest.to_dict() if channel.latest.sequence else None,
    )
    gateway = build_gateway(config, extra_sinks=[controller, agent])
    return gateway.supervisor, agent


async def run_sites(
    sites: Sequence[SimulatedSite],
    credentials_for: Callable[[SimulatedSite], GatewayCredentials],
    state_dir: Path,
    *,
    interval: float = 10.0,
    time_scale: float = 30.0,
    poll_interval: float = 5.0,
    duration: float | None = None,
) -> list[FleetAgent]:
    """Run every site until cancelled (or for `duration` seconds); returns their agents."""
    built = [
        build_site(
            site,
            credentials_for(site),
            state_dir,
            interval=interval,
            time_scale=time_scale,
            poll_interval=poll_interval,
        )
        for site in sites
    ]
    async with asyncio.TaskGroup() as group:
        for supervisor, _ in built:
            group.create_task(supervisor.run(duration=duration))
    return [agent for _, agent in built]
