"""What a simulated gateway says: realistic state, telemetry and alarm events built with the protocol's models.

Each gateway's telemetry is encoded ONCE with :mod:`bmsgate.fleet.protocol` (so it is valid by construction)
with placeholder numbers in ``seq`` and ``at``; every later message is that template's bytes with the two
numbers put back in (a join of three byte strings), which costs a few microseconds instead of a model dump.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Final

from bmsgate.fleet.protocol import (
    BatteryDescriptor,
    BatteryReading,
    Channel,
    EventKind,
    EventMessage,
    Location,
    LocationFix,
    PackVersion,
    StateMessage,
    TelemetryMessage,
    compact_snapshot,
    encode,
    topic,
)
from bmsgate.fleet.sites import SOUTH_AFRICAN_TOWNS
from bmsgate.model import BatterySnapshot

__all__ = ["GatewayTemplate", "SIMULATED_SOFTWARE_VERSION", "build_template"]

SIMULATED_SOFTWARE_VERSION: Final = "0.0.0-simulated"
_SEQ_TOKEN: Final = 987654321987
_AT_TOKEN: Final = 1111111111.25
_PROTOCOLS: Final = ("jk", "daly", "jbd", "seplos", "pylontech")
_TOWN_SPREAD_DEG: Final = 0.08
"""Sites lie within ~9 km of their town."""


@dataclass(frozen=True, slots=True)
class GatewayTemplate:
    """One simulated gateway's pre-encoded messages and topics."""

    gateway: str
    telemetry_topic: bytes
    state_topic: bytes
    event_topic: bytes
    availability_topic: str
    state: bytes
    telemetry_parts: tuple[bytes, bytes, bytes]
    """Before ``seq``, between ``seq`` and ``at``, after ``at``."""
    faulty_battery: str

    def telemetry(self, seq: int, at: float) -> bytes:
        """The telemetry payload stamped with ``seq`` and ``at``."""
        head, middle, tail = self.telemetry_parts
        return b"".join((head, str(seq).encode(), middle, repr(at).encode(), tail))

    def alarm_event(self, seq: int, at: float, *, raised: bool) -> bytes:
        """An over-temperature alarm raised or cleared on the gateway's faulty battery (rare: built each time)."""
        message = EventMessage(
            v=1,
            gateway=self.gateway,
            seq=seq,
            at=at,
            kind=EventKind.ALARM_RAISED if raised else EventKind.ALARM_CLEARED,
            battery=self.faulty_battery,
            alarm="cell_overtemperature",
            detail="simulated fault" if raised else "simulated fault cleared",
            data={"temperature": 61.5 if raised else 38.0},
        )
        return encode(message)


def _snapshot(battery_id: str, protocol: str, rng: random.Random) -> BatterySnapshot:
    cell_count = rng.choice((8, 15, 16, 16, 16))
    base = rng.uniform(3.22, 3.38)
    cells = tuple(round(base + rng.uniform(-0.012, 0.012), 3) for _ in range(cell_count))
    full = rng.choice((100.0, 200.0, 280.0, 314.0))
    soc = round(rng.uniform(15.0, 100.0), 1)
    return BatterySnapshot(
        battery_id=battery_id,
        timestamp=time.time(),
        protocol=protocol,
        voltage=round(sum(cells), 3),
        current=round(rng.uniform(-60.0, 40.0), 2),
        soc=soc,
        soh=round(rng.uniform(88.0, 100.0), 1),
        remaining_capacity=round(full * soc / 100, 1),
        full_capacity=full,
        cycles=rng.randrange(0, 3000),
        cell_voltages=cells,
        temperatures=tuple(round(rng.uniform(18.0, 34.0), 1) for _ in range(rng.choice((2, 4)))),
        mosfet_temperature=round(rng.uniform(25.0, 40.0), 1),
        charge_enabled=True,
        discharge_enabled=True,
        balancing=rng.random() < 0.2,
    )


def _pack(kind: str, name: str, version: str) -> PackVersion:
    digest = hashlib.sha256(f"{kind}/{name}/{version}".encode()).hexdigest()
    return PackVersion.model_validate({"kind": kind, "name": name, "version": version, "sha256": digest})


def build_template(gateway: str, interval_s: float, *, seed: int) -> GatewayTemplate:
    """Gateway ``gateway``'s messages: 1–3 batteries of a random protocol, a site near a South African town.

    The same ``gateway`` and ``seed`` give the same gateway (so a re-run or a second process agrees).
    """
    rng = random.Random(f"{seed}/{gateway}")
    town, province, town_lat, town_lon = rng.choice(SOUTH_AFRICAN_TOWNS)
    protocol = rng.choice(_PROTOCOLS)
    battery_ids = [f"pack{index + 1}" for index in range(rng.choice((1, 1, 2, 2, 3)))]
    now = time.time()
    state = StateMessage(
        v=1,
        gateway=gateway,
        sent_at=now,
        software_version=SIMULATED_SOFTWARE_VERSION,
        hardware=rng.choice(("rpi4", "rpi-zero2w", "esp32-c3")),
        uptime_s=round(rng.uniform(60.0, 3_000_000.0), 1),
        name=f"{town} {gateway[-5:]}",
        site=f"{town}, {province}",
        tags=["simulated", province.lower().replace(" ", "-")],
        interval_s=interval_s,
        packs=[_pack("protocol", protocol, "1.2.0"), _pack("software", "bmsgate", SIMULATED_SOFTWARE_VERSION)],
        location=Location(
            source="gpsd",
            fix=LocationFix.FIX_3D,
            lat=round(town_lat + rng.uniform(-_TOWN_SPREAD_DEG, _TOWN_SPREAD_DEG), 5),
            lon=round(town_lon + rng.uniform(-_TOWN_SPREAD_DEG, _TOWN_SPREAD_DEG), 5),
            alt_m=round(rng.uniform(0.0, 1800.0), 1),
            accuracy_m=round(rng.uniform(2.0, 12.0), 1),
            time=now,
        ),
        batteries=[BatteryDescriptor(id=battery, name=battery, protocol=protocol) for battery in battery_ids],
    )
    readings = [
        BatteryReading(
            id=battery,
            age_s=round(rng.uniform(0.1, 2.0), 2),
            stale=False,
            snapshot=compact_snapshot(_snapshot(battery, protocol, rng)),
        )
        for battery in battery_ids
    ]
    telemetry = TelemetryMessage(
        v=1,
        gateway=gateway,
        seq=_SEQ_TOKEN,
        at=_AT_TOKEN,
        batteries=readings,
        inverter={
            "charge_voltage": 55.2,
            "charge_current": 150.0,
            "discharge_current": 200.0,
            "soc": readings[0].snapshot["soc"] if readings[0].snapshot else None,
            "soh": 99.0,
            "phase": "keep",
            "alarms": [],
            "packs_online": len(battery_ids),
        },
    )
    encoded = encode(telemetry)
    seq_token, at_token = str(_SEQ_TOKEN).encode(), repr(_AT_TOKEN).encode()
    head, rest = encoded.split(b'"seq":' + seq_token, 1)
    middle, tail = rest.split(b'"at":' + at_token, 1)
    return GatewayTemplate(
        gateway=gateway,
        telemetry_topic=topic(gateway, Channel.TELEMETRY).encode(),
        state_topic=topic(gateway, Channel.STATE).encode(),
        event_topic=topic(gateway, Channel.EVENT).encode(),
        availability_topic=topic(gateway, Channel.AVAILABILITY),
        state=encode(state),
        telemetry_parts=(head + b'"seq":', middle + b'"at":', tail),
        faulty_battery=battery_ids[-1],
    )
