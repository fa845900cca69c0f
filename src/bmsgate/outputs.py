"""Wiring of the network outputs (MQTT/Home Assistant, Modbus, CAN) into a gateway.

Each output package is imported only when the configuration (or the demo) asks for it, so a minimal
installation never needs their libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bmsgate.gateway import SinkBuilder

if TYPE_CHECKING:
    from bmsgate.demo import DemoOptions

__all__ = ["configured_sink_builders", "demo_output_builders"]


def configured_sink_builders() -> list[SinkBuilder]:
    """Builders that create the outputs a configuration file enables."""
    return []


def demo_output_builders(options: DemoOptions) -> list[SinkBuilder]:
    """Builders for the demo's outputs on localhost."""
    del options
    return []
