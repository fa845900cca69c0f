"""A synthetic fleet, written through the store interface (for tests, the dashboard benchmark, screenshots).

Sites are spread over South Africa (around real towns, deterministic per index), each with one or two
16-cell packs and an inverter. Every seventh site is offline, every 25th has one drifting cell, and the
messages are the protocol's own (:class:`~bmsgate.fleet.protocol.StateMessage` and
:class:`~bmsgate.fleet.protocol.TelemetryMessage`), so what is seeded is what ingest would store.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Final

from bmsgate.fleet.protocol import (
    BatteryDescriptor,
    BatteryReading,
    Location,
    LocationFix,
    PackVersion,
    StateMessage,
    TelemetryMessage,
    compact_snapshot,
)
from bmsgate.fleet.server.store.repository import Availability, IngestBatch, Repository
from bmsgate.inverter.status import initial_status
from bmsgate.model import BatterySnapshot

__all__ = ["TOWNS", "SampleSite", "sample_site", "seed_fleet", "telemetry"]

TOWNS: Final = (
    ("Johannesburg", -26.20, 28.05),
    ("Pretoria", -25.75, 28.19),
    ("Cape Town", -33.92, 18.42),
    ("Durban", -29.86, 31.02),
    ("Gqeberha", -33.96, 25.60),
    ("Bloemfontein", -29.12, 26.21),
    ("Polokwane", -23.90, 29.45),
    ("Mbombela", -25.47, 30.97),
    ("Kimberley", -28.74, 24.77),
    ("Upington", -28.45, 21.25),
    ("George", -33.96, 22.46),
    ("East London", -33.02, 27.91),
    ("Rustenburg", -25.67, 27.24),
    ("Springbok", -29.66, 17.88),
    ("Mthatha", -31.59, 28.78),
)
_CELLS: Final = 16
_SOFTWARE: Final = ("0.1.0", "0.1.0", "0.1.1", "0.2.0")
_JBD_SHA: Final = "a3" * 32
_MAP_SHA: Final = "5c" * 32


@dataclasses.dataclass(frozen=True, slots=True)
class SampleSite:
    """One synthetic site."""

    index: int
    gateway: str
    name: str
    town: str
    lat: float
    lon: float
    batteries: tuple[str, ...]
    online: bool
    drifting: bool
    software_version: str


def sample_site(index: int) -> SampleSite:
    """The `index`-th site (the same for the same index)."""
    chance = random.Random(index)
    town, lat, lon = TOWNS[index % len(TOWNS)]
    return SampleSite(
        index=index,
        gateway=f"site-{index:05d}",
        name=f"{town} {index:05d}",
        town=town,
        lat=round(lat + chance.uniform(-0.6, 0.6), 5),
        lon=round(lon + chance.uniform(-0.6, 0.6), 5),
        batteries=("pack1", "pack2") if index % 3 == 0 else ("pack1",),
        online=index % 7 != 6,
        drifting=index % 25 == 3,
        software_version=_SOFTWARE[index % len(_SOFTWARE)],
    )


def state(site: SampleSite, now: float) -> StateMessage:
    """The site's retained state message."""
    return StateMessage(
        v=1,
        gateway=site.gateway,
        sent_at=now,
        software_version=site.software_version,
        hardware="raspberrypi-4b",
        uptime_s=3600.0 + site.index,
        name=site.name,
        site=site.town,
        tags=["demo", site.town.lower().replace(" ", "-")],
        interval_s=10.0,
        packs=[
            PackVersion(kind="protocol", name="jbd", version="3", sha256=_JBD_SHA),
            PackVersion(kind="register-map", name="sunsynk", version="1", sha256=_MAP_SHA),
        ],
        location=Location(source="config", fix=LocationFix.FIXED, lat=site.lat, lon=site.lon),
        batteries=[
            BatteryDescriptor(id=battery, name=f"Pack {number}", protocol="jbd")
            for number, battery in enumerate(site.batteries, start=1)
        ],
    )


def _snapshot(site: SampleSite, battery: str, at: float) -> BatterySnapshot:
    chance = random.Random(f"{site.index}:{battery}:{int(at)}")
    soc = 20.0 + (site.index * 37 % 75) + 5.0 * ((at // 600) % 2)
    base = 3.20 + soc / 100 * 0.15
    cells = [round(base + chance.uniform(-0.004, 0.004), 3) for _ in range(_CELLS)]
    if site.drifting and battery == "pack1":
        cells[6] = round(base + 0.12, 3)
    current = round(chance.uniform(-25.0, 30.0), 1)
    return BatterySnapshot(
        battery_id=battery,
        timestamp=at,
        protocol="jbd",
        voltage=round(sum(cells), 2),
        current=current,
        soc=round(soc, 1),
        soh=98.0,
        remaining_capacity=round(280 * soc / 100, 1),
        full_capacity=280.0,
        cycles=100 + site.index % 400,
        cell_voltages=tuple(cells),
        temperatures=(round(24 + chance.uniform(-2, 2), 1), round(25 + chance.uniform(-2, 2), 1)),
        charge_enabled=True,
        discharge_enabled=True,
    )


def telemetry(site: SampleSite, at: float, seq: int) -> TelemetryMessage:
    """One telemetry message of the site at `at`."""
    status = initial_status(site.batteries).to_dict()
    status["state"] = "keep"
    status["limits"].update(
        charge_voltage=55.2, charge_current=100.0, discharge_current=150.0, charge_reason="bms", discharge_reason="bms"
    )
    return TelemetryMessage(
        v=1,
        gateway=site.gateway,
        seq=seq,
        at=at,
        batteries=[
            BatteryReading(id=battery, age_s=1.0, stale=False, snapshot=compact_snapshot(_snapshot(site, battery, at)))
            for battery in site.batteries
        ],
        inverter=status,
    )


def _template_key(site: SampleSite) -> tuple[int, bool, int]:
    return (len(site.batteries), site.drifting, site.index * 37 % 75)


async def seed_fleet(
    store: Repository,
    count: int,
    *,
    now: float,
    history: int = 1,
    step_s: float = 600.0,
    batch_size: int = 500,
    templated: bool = False,
) -> list[SampleSite]:
    """Write `count` sites: state, availability and `history` telemetry messages `step_s` apart up to `now`.

    With `templated`, sites alike (battery count, drifting or not, SoC) share one set of readings, built
    once and re-addressed (the same values as the first such site's): 50,000 sites are seeded in a few
    seconds instead of half a minute, for scale tests and benchmarks that do not look at single cells.
    """
    sites = [sample_site(index) for index in range(count)]
    templates: dict[tuple[tuple[int, bool, int], int], TelemetryMessage] = {}

    def reading(site: SampleSite, at: float, step: int) -> TelemetryMessage:
        if not templated:
            return telemetry(site, at, step)
        key = (_template_key(site), step)
        template = templates.get(key)
        if template is None:
            template = templates[key] = telemetry(site, at, step)
        return template.model_copy(update={"gateway": site.gateway})

    for start in range(0, count, batch_size):
        batch = IngestBatch()
        for site in sites[start : start + batch_size]:
            batch.states.append((state(site, now), now))
            batch.availability.append((site.gateway, Availability.ONLINE if site.online else Availability.OFFLINE, now))
            for step in range(history):
                at = now - (history - 1 - step) * step_s
                batch.telemetry.append((reading(site, at, step), min(now, at + 1)))
        await store.write_batch(batch)
    return sites
