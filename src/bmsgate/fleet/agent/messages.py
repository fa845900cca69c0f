"""Payloads the agent builds from the gateway's present: telemetry, and ``reported`` without a handler.

A telemetry payload is built once per interval, before it gets its sequence number (the buffer hands the
number out inside its transaction): the builder splices the number into the encoded message instead of
validating the whole message a second time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Final

from bmsgate.fleet.protocol import PROTOCOL_VERSION, BatteryReading, TelemetryMessage, compact_snapshot, encode
from bmsgate.runtime.hub import SnapshotHub

__all__ = ["MAX_BATTERIES", "reported_payload", "telemetry_builder"]

_LOGGER = logging.getLogger(__name__)
MAX_BATTERIES: Final = 64
"""What one telemetry message carries at most (the protocol's bound)."""


def telemetry_builder(
    gateway_id: str, hub: SnapshotHub, *, at: float, inverter: Mapping[str, object] | None
) -> Callable[[int], bytes]:
    """The telemetry of this moment (every battery on the hub, the inverter status) for a sequence number."""
    ids = hub.battery_ids()
    if len(ids) > MAX_BATTERIES:
        _LOGGER.warning("fleet: %d batteries; telemetry carries the first %d", len(ids), MAX_BATTERIES)
    readings = []
    for battery_id in ids[:MAX_BATTERIES]:
        snapshot = hub.latest(battery_id)
        readings.append(
            BatteryReading(
                id=battery_id,
                age_s=hub.age(battery_id),
                stale=hub.is_stale(battery_id),
                snapshot=compact_snapshot(snapshot) if snapshot is not None else None,
            )
        )
    message = TelemetryMessage(
        v=PROTOCOL_VERSION,
        gateway=gateway_id,
        seq=0,
        at=at,
        batteries=readings,
        inverter=dict(inverter) if inverter is not None else None,
    )
    # `seq` is the third key (after `v` and the gateway id, which holds no quotes): the first match is it.
    head, tail = encode(message).split(b'"seq":0', 1)
    return lambda seq: b'%s"seq":%d%s' % (head, seq, tail)


def reported_payload(gateway_id: str, *, status: str, desired_sha256: str, detail: str, at: float) -> bytes:
    """The ``reported`` payload when no desired-state handler produced one (see docs/fleet/agent.md)."""
    data: dict[str, object] = {
        "v": PROTOCOL_VERSION,
        "gateway": gateway_id,
        "status": status,
        "desired_sha256": desired_sha256,
        "detail": detail,
        "at": at,
    }
    return json.dumps(data, separators=(",", ":")).encode()
