"""The CAN output's state machines; they live in :mod:`bmsgate.inverter.phases`, shared with RS485."""

from __future__ import annotations

from bmsgate.inverter.phases import ForceChargeRequest, PhaseTracker

__all__ = ["ForceChargeRequest", "PhaseTracker"]
